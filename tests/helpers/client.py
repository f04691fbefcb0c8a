"""A Python realtime.v1 client with the JS client's resume logic, for tests with real servers.

It subscribes its topics, records every message it delivers (dropping duplicates by seq, as
the JS client does), and on any close reconnects with backoff and full jitter, resubscribing
each topic with ``since`` = the last seq it delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException


class ResumingClient:
    def __init__(
        self,
        url: str,
        topics: list[str],
        *,
        since: dict[str, int] | None = None,
        origin: str | None = None,
        base_delay: float = 0.05,
        cap: float = 1.0,
    ):
        self.url = url
        self.topics = topics
        self.last: dict[str, int | None] = {t: (since or {}).get(t) for t in topics}
        self.origin = origin
        self.base_delay, self.cap = base_delay, cap
        self.received: dict[str, list[int]] = {t: [] for t in topics}  # delivered, in order
        self.raw: dict[str, list[int]] = {t: [] for t in topics}  # every frame, duplicates too
        self.arrival: dict[str, dict[int, float]] = {t: {} for t in topics}  # seq → time.time()
        self.frames: list[dict[str, Any]] = []
        self.connects = 0
        self.close_codes: list[int | None] = []
        self.reconnect_delays: list[float] = []
        self.changed = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.ws = None

    def start(self) -> ResumingClient:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url, subprotocols=["realtime.v1"], origin=self.origin, open_timeout=5
                ) as ws:
                    self.ws = ws
                    self.connects += 1
                    attempt = 0
                    await self._session(ws)
                    self.close_codes.append(ws.close_code)
            except (OSError, WebSocketException, TimeoutError) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                self.close_codes.append(code)
            self.ws = None
            delay = random.uniform(0, min(self.cap, self.base_delay * 2**attempt))
            self.reconnect_delays.append(delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self, ws) -> None:
        pending = set(self.topics)
        async for text in ws:
            frame = json.loads(text)
            self.frames.append(frame)
            kind = frame["type"]
            if kind == "welcome":
                for topic in self.topics:
                    sub = {"type": "subscribe", "topic": topic}
                    if self.last[topic] is not None:
                        sub["since"] = self.last[topic]
                    await ws.send(json.dumps(sub))
            elif kind == "subscribed":
                pending.discard(frame["topic"])
                if not pending:
                    self.subscribed.set()
            elif kind == "message":
                topic, seq = frame["topic"], frame["seq"]
                self.raw[topic].append(seq)
                self.arrival[topic].setdefault(seq, time.time())
                last = self.last[topic]
                if last is None or seq > last:
                    self.last[topic] = seq
                    self.received[topic].append(seq)
                self.changed.set()

    async def wait_for(self, topic: str, seq: int, timeout: float = 20) -> None:
        """Wait until ``seq`` of ``topic`` was delivered."""
        async with asyncio.timeout(timeout):
            while (self.last[topic] or 0) < seq:
                self.changed.clear()
                await self.changed.wait()
