"""The scheduler: due feeds, failing feeds, sweep, prune, outages, and runscheduler."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command

from realtime import fanout, outbox
from realtime.feeds import Feed
from realtime.models import Message, Topic
from realtime.scheduler import Scheduler

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def counter_feed(slug: str, every: float) -> Feed:
    state = {"n": 0}

    def produce():
        state["n"] += 1
        return {"n": state["n"]}

    return Feed(slug, produce, every)


async def test_tick_runs_only_due_feeds():
    clock = Clock()
    fast, slow = counter_feed("fast", 1), counter_feed("slow", 10)
    scheduler = Scheduler(interval=1, feeds={"fast": fast, "slow": slow}, clock=clock)
    assert (await scheduler.tick()).feeds_run == ["fast", "slow"]
    clock.now += 1
    report = await scheduler.tick()
    assert report.feeds_run == ["fast"] and report.published == ["fast"]
    clock.now += 9
    assert sorted((await scheduler.tick()).feeds_run) == ["fast", "slow"]
    counts = await database_sync_to_async(
        lambda: {t.slug: t.last_seq for t in Topic.objects.all()}
    )()
    assert counts == {"fast": 3, "slow": 2}


async def test_failing_feed_is_reported_and_others_go_on(caplog):
    def broken():
        raise ZeroDivisionError("bad feed")

    feeds = {"bad": Feed("bad", broken, 1), "good": counter_feed("good", 1)}
    report = await Scheduler(interval=1, feeds=feeds, clock=Clock()).tick()
    assert report.failed == ["bad"] and report.published == ["good"]
    assert "bad feed" in caplog.text


async def test_unchanged_feed_data_is_not_republished():
    clock = Clock()
    scheduler = Scheduler(
        interval=1, feeds={"same": Feed("same", lambda: {"v": 1}, 1)}, clock=clock
    )
    assert (await scheduler.tick()).published == ["same"]
    clock.now += 1
    report = await scheduler.tick()
    assert report.feeds_run == ["same"] and report.published == []


async def test_tick_sweeps_outbox_and_prunes(settings, monkeypatch, listener):
    settings.REALTIME = {"OUTBOX_GRACE": 0}
    await database_sync_to_async(Topic.objects.create)(slug="news", retention=2)
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda m: None)  # Redis was down
    for i in range(4):
        await database_sync_to_async(outbox.publish)("news", i)
    monkeypatch.undo()
    report = await Scheduler(interval=1, feeds={}, clock=Clock()).tick(all_due=True)
    assert report.swept == 4 and report.pruned == 2
    seqs = [(await listener.next())[1] for _ in range(4)]
    assert seqs == [1, 2, 3, 4]
    assert await database_sync_to_async(
        lambda: list(Message.objects.values_list("seq", flat=True))
    )() == [3, 4]


async def test_run_backs_off_on_failure_and_recovers(monkeypatch, caplog):
    calls = []
    stop = asyncio.Event()

    async def flaky_sweep():
        calls.append(len(calls))
        if len(calls) <= 2:
            raise ConnectionError("Redis is down")
        stop.set()
        return 0

    monkeypatch.setattr(outbox, "sweep", flaky_sweep)
    monkeypatch.setattr("realtime.scheduler.MAX_BACKOFF", 0.01)
    await asyncio.wait_for(Scheduler(interval=0.001, feeds={}).run(stop), timeout=10)
    assert len(calls) == 3
    assert "tick failed (ConnectionError: Redis is down)" in caplog.text
    assert "recovered after 2 failed tick(s)" in caplog.text


def test_runscheduler_once_runs_every_feed(capsys):
    call_command("runscheduler", "--once")
    out = capsys.readouterr().out
    assert "feeds run: 2, published: 2, failed: 0" in out
    assert set(Topic.objects.values_list("slug", flat=True)) >= {"clock", "site-stats"}


def test_runscheduler_refuses_bad_interval():
    with pytest.raises(CommandError, match="--interval"):
        call_command("runscheduler", "--once", "--interval", "0")


def test_runscheduler_once_fails_when_a_feed_fails(monkeypatch):
    from realtime import scheduler

    monkeypatch.setattr(scheduler, "registry", lambda: {"bad": Feed("bad", lambda: 1 / 0, 1)})
    with pytest.raises(CommandError, match="Feeds failed: bad"):
        call_command("runscheduler", "--once")
