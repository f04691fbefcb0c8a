"""realtime.fanout: every Redis write. Message frames, the after-commit fan-out and its circuit
breaker, heads and access announcements, presence sums, and the scheduler's lock, against the
real Redis of the test run."""

from __future__ import annotations

import json

import pytest
import redis
from channels.db import database_sync_to_async

from realtime import fanout, keys
from realtime.models import Message, Topic
from realtime.outbox import publish
from tests.test_scheduler import Clock

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_message_frame_carries_topic_seq_time_data_and_html(topic_factory):
    topic = topic_factory("news")
    message = publish(topic, {"title": "Hi"})
    frame = json.loads(fanout.frame(Message.objects.select_related("topic").get(pk=message.pk)))
    assert (frame["type"], frame["topic"], frame["seq"]) == ("message", "news", 1)
    assert frame["data"] == {"title": "Hi"} and frame["ts"].endswith("Z") and "Hi" in frame["html"]


def test_the_breaker_opens_after_a_failure_and_lets_one_caller_try_after_the_cooldown():
    clock = Clock()
    breaker = fanout.Breaker(1.0, clock)
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    assert breaker.is_open and not breaker.allow()
    clock.now += 1.5
    assert breaker.allow()  # half-open: one caller tries
    assert not breaker.allow()  # the others still skip
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow()


async def test_a_commit_publishes_one_event_per_message_on_its_topic_channel(listener):
    topic = await database_sync_to_async(Topic.objects.create)(slug="news", title="News")
    await database_sync_to_async(publish)(topic, "one")
    slug, seq, frame = await listener.next()
    assert (slug, seq, frame["data"]) == ("news", 1, "one")
    stored = await database_sync_to_async(Message.objects.get)(topic=topic, seq=1)
    assert stored.fanned_out_at is not None  # the sweep will not send it again


def test_heads_and_access_changes_go_to_their_channels(redis_url):
    url, prefix = keys.redis_config()
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.heads_channel(prefix), keys.access_channel(prefix))
    for _ in range(2):
        pubsub.get_message(timeout=2)  # the two subscribe confirmations
    fanout.announce_heads({"news": 7})
    fanout.announce_access_change(users=[3])
    got = [pubsub.get_message(timeout=2) for _ in range(2)]
    assert json.loads(got[0]["data"]) == {"news": 7}
    assert json.loads(got[1]["data"])["users"] == [3]
    pubsub.close()
    client.close()


async def test_presence_written_by_hubs_is_summed_over_processes():
    import redis.asyncio as aioredis

    url, prefix = keys.redis_config()
    client = aioredis.Redis.from_url(url)
    await fanout.write_presence(
        client, keys.presence_key(prefix, "a"), {"news": 2, "_connections": 3}, 10
    )
    await fanout.write_presence(client, keys.presence_key(prefix, "b"), {"news": 1, "chat": 4}, 10)
    await client.aclose()
    counts = await database_sync_to_async(fanout.subscriber_counts)()
    assert counts == {"news": 3, "chat": 4}  # "_connections" is not a topic
    assert await database_sync_to_async(fanout.subscriber_count)("news") == 3


def test_one_scheduler_holds_the_lock_until_it_releases_it():
    first, second = fanout.LeaderLock(ttl=5), fanout.LeaderLock(ttl=5)
    assert first.acquire() and first.acquire()  # taken, then renewed
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
