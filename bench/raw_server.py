"""Baseline: a raw broadcast server on the `websockets` library (no Django, no Channels).

It subscribes to one Redis channel and broadcasts every payload to every connected client
with ``websockets.broadcast`` — the ceiling a Python WebSocket server reaches on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import redis.asyncio as aioredis
from publisher import RAW_CHANNEL
from websockets.asyncio.server import broadcast, serve

CONNECTIONS: set = set()


async def handler(websocket) -> None:
    CONNECTIONS.add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        CONNECTIONS.discard(websocket)


async def relay(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(RAW_CHANNEL)
    async for message in pubsub.listen():
        if message["type"] == "message":
            broadcast(CONNECTIONS, message["data"].decode())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    relay_task = asyncio.create_task(relay(os.environ["REDIS_URL"]))
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        subprotocols=["realtime.v1"],
        max_queue=None,
        ping_interval=20,
        backlog=1024,
    ):
        await relay_task


if __name__ == "__main__":
    asyncio.run(main())
