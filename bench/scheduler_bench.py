"""Scheduler benchmark: N topics whose feeds are all due in one tick; how long the tick takes.

Run by bench/run.py with DATABASE_URL and REDIS_URL set; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from realtime.feeds import Feed  # noqa: E402
from realtime.models import Topic  # noqa: E402
from realtime.scheduler import Scheduler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=1000)
    args = parser.parse_args()
    counter = {"tick": 0}
    feeds = {}
    for k in range(args.feeds):
        slug = f"feed-{k}"
        feeds[slug] = Feed(slug, lambda k=k: {"tick": counter["tick"], "k": k}, 1.0)
    Topic.objects.bulk_create(
        [Topic(slug=slug, title=slug) for slug in feeds], ignore_conflicts=True
    )
    scheduler = Scheduler(interval=1.0, feeds=feeds)
    results = []
    for tick in range(3):
        counter["tick"] = tick
        started = time.perf_counter()
        report = asyncio.run(scheduler.tick(all_due=True))
        results.append((time.perf_counter() - started, len(report.published)))
    print(
        json.dumps(
            {
                "feeds": args.feeds,
                "tick_seconds": max(r[0] for r in results[1:]),
                "ticks": [round(r[0], 3) for r in results],
                "published": min(r[1] for r in results),
            }
        )
    )


if __name__ == "__main__":
    main()
