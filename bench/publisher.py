"""Publish --count messages at --rate per second, each carrying its send time, three ways:

- product:  ``realtime.publish()`` — stored in the database, then fanned out (the real path);
- tutorial: ``channel_layer.group_send()`` of a frame (the Channels tutorial design);
- raw:      a Redis PUBLISH of the frame to the raw websockets server.

Every frame is the same realtime.v1 ``message`` frame with data ``{"t": ns, "i": index}``
and the ``html`` the product renders for it (its default template), so every server sends the
same bytes: 367 a frame. Until 2026-11-28 the raw and tutorial frames had no ``html`` (115
bytes), which left the product's load generator three times the bytes to parse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
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


def html_maker():
    """A function (t, i) -> the html the product renders for data ``{"t": t, "i": i}`` (the
    default template), rendered once here with stand-ins: no rendering per frame."""
    import django

    django.setup()
    from realtime import rendering
    from realtime.models import Message, Topic

    stand_in = {"t": "@T@", "i": "@I@"}
    message = Message(topic=Topic(slug="bench"), seq=1, data=stand_in, created_at=datetime.now(UTC))
    html = rendering.render(message)
    return lambda t, i: html.replace("@T@", str(t)).replace("@I@", str(i))


def frame_for(topic: str, i: int, html: Callable[[int, int], str]) -> str:
    from realtime import protocol

    t = time.time_ns()
    return protocol.message(topic, i + 1, datetime.now(UTC), {"t": t, "i": i}, html=html(t, i))


def run_product(topic: str, count: int, rate: float) -> None:
    """Publish, and print (a JSON line) how long each publish kept its message before its
    ``PUBLISH`` was written: storing and rendering first, what the raw broadcast skips."""
    import django

    django.setup()
    from realtime import cluster, publish

    written = [0]
    real = cluster.topic_publish

    def stamped(*args, **kwargs):
        written[0] = time.perf_counter_ns()
        return real(*args, **kwargs)

    cluster.topic_publish = stamped
    waits = []
    for i in paced(count, rate):
        started = written[0] = time.perf_counter_ns()
        publish(topic, {"t": time.time_ns(), "i": i}, source="api")
        if written[0] > started:  # (not when the sweep or the lane sent it instead)
            waits.append((written[0] - started) / 1000)
    waits.sort()
    if waits:
        print(json.dumps({"publish_wait_p50_us": waits[len(waits) // 2]}), flush=True)


def run_raw(topic: str, count: int, rate: float) -> None:
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    html = html_maker()
    for i in paced(count, rate):
        client.publish(RAW_CHANNEL, frame_for(topic, i, html))


def run_tutorial(topic: str, count: int, rate: float) -> None:
    import django

    django.setup()
    from channels.layers import get_channel_layer

    html = html_maker()

    async def go() -> None:
        layer = get_channel_layer()
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await layer.group_send(
                "bench", {"type": "bench.message", "frame": frame_for(topic, i, html)}
            )

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
