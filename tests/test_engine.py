"""The fan-out engine under real daphne processes: the direct-write fast path keeps order,
fills gaps, drops duplicates and respects permissions; two processes share a topic."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from tests.helpers.client import ResumingClient
from tests.helpers.processes import Site, manage, start_daphne

pytestmark = pytest.mark.e2e

PUBLISH_MANY = (
    "import sys; from realtime import publish; "
    "[publish('{topic}', {{'n': i}}) for i in range({count})]"
)


@pytest.fixture
def site(live_site):
    return live_site(scheduler=False)


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws/"


async def shell(site: Site, code: str) -> None:
    await asyncio.to_thread(manage, site.env, "shell", "-c", code)


async def test_two_daphne_processes_share_a_topic(site, tmp_path):
    second, port2 = start_daphne(site.env, tmp_path / "daphne-second.log")
    try:
        clients = [
            ResumingClient(ws_url(port), ["chat"]).start()
            for port in (site.port, port2)
            for _ in range(3)
        ]
        for c in clients:
            await asyncio.wait_for(c.subscribed.wait(), 10)
        await shell(site, PUBLISH_MANY.format(topic="chat", count=30))
        for c in clients:
            await c.wait_for("chat", 30)
            assert c.raw["chat"] == list(range(1, 31))  # every message, once, in order
        for c in clients:
            await c.stop()
    finally:
        second.stop()


async def test_fast_path_fills_a_gap_and_drops_duplicates(site):
    client = ResumingClient(ws_url(site.port), ["chat"]).start()
    await asyncio.wait_for(client.subscribed.wait(), 10)
    # Two messages stored whose fan-out is lost, then one delivered normally.
    await shell(
        site,
        "from realtime import fanout, publish; "
        "fanout.fan_out_after_commit = lambda m: None; "
        "publish('chat', 1); publish('chat', 2)",
    )
    await shell(site, "from realtime import publish; publish('chat', 3)")
    await client.wait_for("chat", 3)
    # Redis repeats messages 1..3 (as an outbox sweep racing the after-commit send would).
    await shell(
        site,
        "from realtime import fanout; from realtime.models import Message; "
        "fanout.send_now(Message.objects.select_related('topic').filter("
        "topic__slug='chat').order_by('seq'))",
    )
    await shell(site, "from realtime import publish; publish('chat', 4)")
    await client.wait_for("chat", 4)
    assert client.raw["chat"] == [1, 2, 3, 4]
    assert [f["data"] for f in client.frames if f["type"] == "message"] == [1, 2, 3, 4]
    await client.stop()


async def test_fast_path_sends_only_subscribed_and_permitted_topics(site):
    async with connect(ws_url(site.port), subprotocols=["realtime.v1"]) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "subscribe", "topic": "staff-room", "id": 1}))
        refused = json.loads(await ws.recv())
        assert (refused["type"], refused["code"]) == ("error", "not_found")
        await ws.send(json.dumps({"type": "subscribe", "topic": "news", "since": 1}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await shell(
            site,
            "from realtime import publish; publish('staff-room', 'secret'); "
            "publish('chat', 'other'); publish('news', 'mine')",
        )
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (frame["topic"], frame["seq"], frame["data"]) == ("news", 2, "mine")


async def test_autobahn_write_path_delivers_every_message_in_order(live_site):
    site = live_site(scheduler=False, realtime={"WRITE_PATH": "autobahn"})
    client = ResumingClient(site.ws_url, ["chat"]).start()
    await asyncio.wait_for(client.subscribed.wait(), 10)
    await shell(site, PUBLISH_MANY.format(topic="chat", count=30))
    await client.wait_for("chat", 30)
    assert client.raw["chat"] == list(range(1, 31))
    await client.stop()


async def test_a_burst_the_hub_reads_at_once_goes_corked_to_every_subscriber_in_order(site):
    """300 messages committed at once reach the hub back to back (one pipeline), so it reads
    many at a time and delivers them corked (``wire.cork``: each subscriber's frames of them
    joined in one send): every subscriber gets every frame once, intact and in order, live
    (nothing replayed from the database), and the counter says it went corked."""
    from tests.test_ops import get, sample

    clients = [ResumingClient(ws_url(site.port), ["chat"]).start() for _ in range(12)]
    try:
        for client in clients:
            await asyncio.wait_for(client.subscribed.wait(), 15)
        await shell(
            site,
            "from realtime.outbox import publish_many; "
            "publish_many([('chat', {'n': i}) for i in range(300)])",
        )
        for client in clients:
            await client.wait_for("chat", 300)
    finally:
        for client in clients:
            await client.stop()
    for client in clients:
        assert client.raw["chat"] == list(range(1, 301))
        sent = [f["data"]["n"] for f in client.frames if f["type"] == "message"]
        assert sent == list(range(300))

    def scraped() -> str:
        deadline = time.monotonic() + 15
        while True:
            status, body = get(site.url + "/metrics")
            assert status == 200
            # The hub adds its counts to the metrics now and then: wait for all of them.
            done = sample(body, "realtime_frames_delivered_total") == 12 * 300
            if done or time.monotonic() > deadline:
                return body
            time.sleep(0.2)

    body = await asyncio.to_thread(scraped)
    assert sample(body, "realtime_messages_corked_total") >= 2
    assert sample(body, "realtime_frames_delivered_total") == 12 * 300
    assert not sample(body, "realtime_frames_replayed_total")
