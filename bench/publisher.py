"""Publish --count messages at --rate per second, each carrying its send time, three ways:

- product:  ``realtime.publish()`` — stored in the database, then fanned out (the real path);
- tutorial: ``channel_layer.group_send()`` of a frame (the Channels tutorial design);
- raw:      a Redis PUBLISH of the frame to the raw websockets server.

Every frame is the same realtime.v1 ``message`` frame with data ``{"t": ns, "i": index}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

RAW_CHANNEL = "bench:raw"


def paced(count: int, rate: float):
    """Yield i at start + i/rate (sending at once when behind)."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


def frame_for(topic: str, i: int) -> str:
    from realtime import protocol

    return protocol.message(topic, i + 1, datetime.now(UTC), {"t": time.time_ns(), "i": i})


def run_product(topic: str, count: int, rate: float) -> None:
    import django

    django.setup()
    from realtime import publish

    for i in paced(count, rate):
        publish(topic, {"t": time.time_ns(), "i": i}, source="api")


def run_raw(topic: str, count: int, rate: float) -> None:
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for i in paced(count, rate):
        client.publish(RAW_CHANNEL, frame_for(topic, i))


def run_tutorial(topic: str, count: int, rate: float) -> None:
    import django

    django.setup()
    from channels.layers import get_channel_layer

    async def go() -> None:
        layer = get_channel_layer()
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await layer.group_send("bench", {"type": "bench.message", "frame": frame_for(topic, i)})

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["product", "tutorial", "raw"], required=True)
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    {"product": run_product, "tutorial": run_tutorial, "raw": run_raw}[args.mode](
        args.topic, args.count, args.rate
    )


if __name__ == "__main__":
    main()
