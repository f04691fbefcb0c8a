"""Limits and channel-layer traps (issue 5), in-process over the real Redis."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime import fanout, keys
from realtime.models import Topic
from realtime.outbox import publish
from realtime.scheduler import Scheduler

pytestmark = pytest.mark.django_db(transaction=True)

apublish = database_sync_to_async(publish)


async def test_flooding_publisher_is_told_then_closed_1008(connect, settings):
    settings.REALTIME = {"PUBLISH_RATE_PER_S": 0.001, "PUBLISH_BURST": 1, "ABUSE_BUDGET": 3}
    await database_sync_to_async(Topic.objects.create)(slug="chat", visitor_publish=True)
    _, _, ws = await connect()
    frame = {"type": "publish", "topic": "chat", "data": "spam"}
    assert (await ws.request(frame))["type"] == "published"
    codes = []
    for _ in range(4):
        await ws.send(frame)
        codes.append((await ws.recv())["code"])
    assert codes == ["rate_limited"] * 4  # told every time...
    assert await ws.closed() == 1008  # ...and closed once the abuse budget is spent


async def test_connections_per_address_are_limited_when_configured(connect, settings):
    settings.REALTIME = {"MAX_CONNECTIONS_PER_ADDRESS": 2}
    first = await connect()
    second = await connect()
    assert first[0] and second[0]
    refused, _, _ = await connect()
    assert not refused
    await first[2].c.disconnect()
    assert (await connect())[0]  # a slot is free again


async def test_connections_per_address_unlimited_by_default(connect):
    results = [await connect() for _ in range(5)]
    assert all(ok for ok, _, _ in results)


async def test_subscription_outlives_channel_layer_group_expiry(connect, settings, redis_url):
    # channels_redis forgets group members after group_expiry; topics do not use groups.
    from tests.conftest import layer_settings

    layers = layer_settings(redis_url, settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"])
    layers["default"]["CONFIG"]["group_expiry"] = 1
    settings.CHANNEL_LAYERS = layers
    await database_sync_to_async(Topic.objects.create)(slug="news")
    _, _, ws = await connect()
    await ws.subscribe("news")
    await asyncio.sleep(2.5)  # deliberately past the layer's group expiry, not a race
    await apublish("news", {"n": 1})
    assert (await ws.recv())["seq"] == 1


async def test_lost_last_message_is_fetched_after_the_scheduler_announces_heads(
    connect, monkeypatch
):
    await database_sync_to_async(Topic.objects.create)(slug="news")
    _, _, ws = await connect()
    await ws.subscribe("news")
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda messages: None)
    await apublish("news", {"n": "lost"})  # stored, but its fan-out never happens
    monkeypatch.undo()
    report = await Scheduler(interval=1, feeds={}).tick()
    assert report.announced == 1
    frame = await ws.recv()
    assert (frame["seq"], frame["data"]) == (1, {"n": "lost"})


async def test_hub_resyncs_subscribers_when_its_redis_subscription_returns(connect, monkeypatch):
    from realtime import engine

    await database_sync_to_async(Topic.objects.create)(slug="news")
    _, _, ws = await connect()
    await ws.subscribe("news")
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda messages: None)
    await apublish("news", {"n": 1})  # published while the hub "was away"
    monkeypatch.undo()
    hub = engine.hub()
    await hub.subscribed()  # what the hub runs each time its subscription is re-established
    assert (await ws.recv())["seq"] == 1


async def test_hub_notices_a_silent_redis_and_resubscribes_when_it_answers(tmp_path, settings):
    import os
    import signal

    from realtime import engine
    from realtime.embedded import EmbeddedRedis
    from tests.conftest import layer_settings

    with EmbeddedRedis(directory=tmp_path / "redis") as redis:
        settings.CHANNEL_LAYERS = layer_settings(redis.url, "silent")
        hub = engine.Hub(*keys.redis_config())
        hub.poll_every, hub.ping_after, hub.silent_limit = 0.1, 0.3, 0.8
        try:
            assert await hub.wait_ready(10)
            os.kill(redis.process.pid, signal.SIGSTOP)  # alive, connected, not answering
            async with asyncio.timeout(10):
                while hub.ready.is_set():
                    await asyncio.sleep(0.05)
            os.kill(redis.process.pid, signal.SIGCONT)
            assert await hub.wait_ready(15)
            assert hub.subscribes == 2
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
            await hub.stop()
