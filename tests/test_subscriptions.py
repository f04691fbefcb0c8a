"""``realtime.subscriptions.TopicChannels``: which topic channels a hub asks Redis for."""

from __future__ import annotations

import asyncio
import time

from realtime import subscriptions
from realtime.subscriptions import TopicChannels


def test_new_topics_go_in_one_batch_and_are_asked_for_once():
    channels = TopicChannels()
    channels.hold("a")
    channels.hold("b")
    assert channels.changes.is_set()
    subscribe, unsubscribe = channels.next_batch(time.monotonic())
    assert sorted(subscribe) == ["a", "b"] and unsubscribe == []
    assert channels.next_batch(time.monotonic()) == ([], [])


def test_a_topic_held_a_while_lingers_one_only_tried_goes_at_once(monkeypatch):
    channels = TopicChannels()
    clock = [100.0]
    monkeypatch.setattr(subscriptions.time, "monotonic", lambda: clock[0])
    for slug in ("kept", "tried"):
        channels.hold(slug)
    channels.next_batch(clock[0])
    channels.confirm("kept")
    channels.confirm("tried")
    channels.release("tried")  # held for no time: a visitor cycling keys
    clock[0] += 2.0
    channels.release("kept")  # held 2 s: a reload may bring it back
    assert channels.next_batch(clock[0]) == ([], ["tried"])
    assert "tried" not in channels.confirmed
    channels.hold("kept")  # back within LINGER: nothing to send
    assert channels.next_batch(clock[0]) == ([], [])
    channels.release("kept")
    clock[0] += subscriptions.LINGER + 0.1
    assert channels.next_batch(clock[0]) == ([], ["kept"])


def test_too_many_lingering_topics_are_dropped_at_once(monkeypatch):
    monkeypatch.setattr(subscriptions, "MAX_LINGERING", 2)
    channels = TopicChannels()
    for slug in "abc":
        channels.hold(slug)
        channels.held_since[slug] -= 10  # held long enough to linger
    channels.next_batch(time.monotonic())
    for slug in "abc":
        channels.release(slug)
    assert channels.next_batch(time.monotonic())[1] == ["c"]


async def test_a_subscriber_waits_for_the_confirmation():
    channels = TopicChannels()
    channels.hold("a")
    waiting = asyncio.ensure_future(channels.wait("a", 1.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert channels.confirm("a") is False  # the first confirmation
    assert await waiting is True
    assert await channels.wait("a", 0.01) is True
    assert await channels.wait("never", 0.01) is False
    assert channels.confirm("a") is True  # again: redis-py subscribed again by itself
    channels.lost()
    assert channels.confirmed == set() and channels.held({"a": 1}) == {"a"}
