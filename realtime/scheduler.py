"""The scheduler: one event loop that runs due feeds, sweeps the outbox and prunes.

Started by ``python manage.py runscheduler``. It never dies of one failure: a failing feed is
logged and the others go on; a database or Redis outage makes the tick fail, and the loop
retries with exponential backoff, then catches up (the outbox sweep sends what was stored).

Several schedulers may run (one per host): only the one holding the lock in Redis
(``LeaderLock``) ticks; the others wait and take over within ``SCHEDULER_LOCK_TTL`` seconds
when it dies. While Redis is unreachable no scheduler is active, so no feed runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone

from realtime import fanout, metrics, outbox
from realtime.conf import realtime_settings
from realtime.fanout import LeaderLock
from realtime.feeds import Feed, registry, run_feeds

logger = logging.getLogger("realtime.scheduler")

MAX_BACKOFF = 10.0
GAUGE_EVERY = 2.0  # seconds between counts of the outbox backlog for /metrics


@dataclass
class TickReport:
    """What one tick did."""

    feeds_run: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    swept: int = 0
    pruned: int = 0
    announced: int = 0


@sync_to_async
def _run_feeds(items: list[Feed]) -> tuple[list, list]:
    close_old_connections()
    return run_feeds(items)


@sync_to_async
def _prune() -> int:
    from realtime.models import Topic

    close_old_connections()
    total = 0
    beyond = Topic.objects.filter(last_seq__gt=F("retention")).only("id", "last_seq", "retention")
    for topic in beyond:
        total += outbox.prune(topic)
    from realtime import idempotency

    idempotency.prune()  # keys past their 24 h window
    return total


@sync_to_async
def _active_heads() -> dict[str, int]:
    """Latest seq of every topic with a message in the last HEADS_WINDOW seconds."""
    from realtime.models import Topic

    cutoff = timezone.now() - timedelta(seconds=realtime_settings.HEADS_WINDOW)
    return dict(
        Topic.objects.filter(messages__created_at__gte=cutoff)
        .distinct()
        .values_list("slug", "last_seq")
    )


@sync_to_async
def _outbox_pending() -> int:
    from realtime.models import Message

    return Message.objects.filter(fanned_out_at__isnull=True).count()


class Scheduler:
    """Runs feeds when due, sweeps the outbox and prunes, once per tick."""

    def __init__(
        self,
        interval: float | None = None,
        feeds: dict[str, Feed] | None = None,
        clock: Callable[[], float] = time.monotonic,
        prune_every: float = 60.0,
    ) -> None:
        self.interval = float(interval or realtime_settings.SCHEDULER_TICK)
        if self.interval <= 0:
            raise ValueError(f"The scheduler interval must be > 0, not {interval!r}.")
        self.feeds = registry() if feeds is None else feeds
        self.clock = clock
        self.prune_every = prune_every
        self.next_due: dict[str, float] = {}
        self.next_prune = 0.0
        self.next_gauge = 0.0

    def due(self, now: float) -> list[Feed]:
        return [f for slug, f in self.feeds.items() if self.next_due.get(slug, 0.0) <= now]

    async def tick(self, *, all_due: bool = False) -> TickReport:
        """Run one tick. Feed failures are reported; sweep or prune failures raise."""
        report = TickReport()
        now = self.clock()
        due = list(self.feeds.values()) if all_due else self.due(now)
        for item in due:
            self.next_due[item.topic] = now + item.every
        if due:
            report.feeds_run = [item.topic for item in due]
            messages, failed = await _run_feeds(due)
            report.published = [m.topic.slug for m in messages]
            report.failed = [topic for topic, _ in failed]
            for topic in report.failed:
                metrics.FEED_FAILURES.labels(topic).inc()
        report.swept = await outbox.sweep()
        if all_due or now >= self.next_gauge:
            # /metrics shows the outbox backlog from here, not by a query per scrape.
            metrics.OUTBOX_PENDING.set(await _outbox_pending())
            self.next_gauge = now + GAUGE_EVERY
        heads = await _active_heads()
        if heads:
            await sync_to_async(fanout.announce_heads, thread_sensitive=False)(heads)
            report.announced = len(heads)
        if all_due or now >= self.next_prune:
            report.pruned = await _prune()
            self.next_prune = now + self.prune_every
            if report.pruned:
                logger.info("pruned %d message(s) beyond retention", report.pruned)
        logger.debug("tick: %s", report)
        return report

    async def run(self, stop: asyncio.Event, lock: LeaderLock | None = None) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set; back off on failures.

        With a ``lock``, tick only while holding it (one active scheduler among several).
        """
        logger.info(
            "scheduler started: %d feed(s), tick %.3gs: %s",
            len(self.feeds),
            self.interval,
            ", ".join(sorted(self.feeds)) or "none",
        )
        failures, active = 0, None
        while not stop.is_set():
            started = self.clock()
            try:
                if lock is not None:
                    holding = await sync_to_async(lock.acquire, thread_sensitive=False)()
                    if holding != active:
                        active = holding
                        logger.info(
                            "scheduler %s",
                            "active" if holding else "standby: another scheduler holds the lock",
                        )
                metrics.SCHEDULER_LEADER.set(1 if lock is None or active else 0)
                if lock is None or active:
                    await self.tick()
                    metrics.TICKS.labels("ok").inc()
                    owner = lock.owner if lock is not None else f"pid {os.getpid()}"
                    await sync_to_async(fanout.record_tick, thread_sensitive=False)(owner)
                    metrics.LAST_TICK.set(time.time())
                if failures:
                    logger.info("scheduler recovered after %d failed tick(s)", failures)
                failures = 0
                delay = max(0.0, self.interval - (self.clock() - started))
            except Exception as exc:
                failures += 1
                metrics.TICKS.labels("failed").inc()
                if active and lock is not None:
                    active = None  # unknown until the lock is taken again
                delay = min(MAX_BACKOFF, self.interval * 2 ** min(failures, 10))
                logger.error(
                    "tick failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay
                )
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        if lock is not None and active:
            try:
                await sync_to_async(lock.release, thread_sensitive=False)()
            except Exception:
                logger.warning("could not release the scheduler lock", exc_info=True)
        metrics.SCHEDULER_LEADER.set(0)
        logger.info("scheduler stopped")
