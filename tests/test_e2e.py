"""End to end: real daphne and runscheduler processes, a real WebSocket client, real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers.processes import manage

pytestmark = pytest.mark.e2e


@pytest.fixture
def site(live_site):
    """daphne + runscheduler on a fresh SQLite database; stopped by pid at the end."""
    running = live_site(realtime={"SCHEDULER_TICK": 0.2})
    yield running.env, running.port, running.daphne, running.scheduler
    code = running.scheduler.stop()
    assert code == 0, running.scheduler.output()  # the scheduler stops cleanly on SIGTERM


async def recv(ws, type_: str, timeout: float = 10) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == type_:
                return frame


async def test_published_message_and_clock_reach_a_real_client(site):
    env, port, daphne, scheduler = site
    async with connect(
        f"ws://127.0.0.1:{port}/ws/",
        subprotocols=["realtime.v1"],
        origin=f"http://127.0.0.1:{port}",
    ) as ws:
        assert ws.subprotocol == "realtime.v1"
        assert (await recv(ws, "welcome"))["protocol"] == "realtime.v1"
        await ws.send(json.dumps({"type": "subscribe", "topic": "news", "id": 1}))
        assert (await recv(ws, "subscribed"))["seq"] == 1
        assert (await recv(ws, "message"))["data"]["title"] == "Welcome"
        out = await asyncio.to_thread(manage, env, "publish", "news", '{"title": "e2e"}')
        assert out.stdout.strip() == "2"
        frame = await recv(ws, "message")
        assert (frame["seq"], frame["data"]) == (2, {"title": "e2e"})
        await ws.send(json.dumps({"type": "subscribe", "topic": "clock"}))
        assert (await recv(ws, "message"))["topic"] == "clock"  # from the scheduler's feed
        await ws.send("{bad")
        assert (await recv(ws, "error"))["code"] == "bad_json"
        await ws.send(json.dumps({"type": "ping", "id": "still"}))
        assert (await recv(ws, "pong"))["id"] == "still"


async def test_real_server_refuses_foreign_origin_and_wrong_subprotocol(site):
    _, port, _, _ = site
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/ws/", origin="https://evil.example"):
            pass
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/ws/", subprotocols=["other"]):
            pass
    assert info.value.response.status_code == 403
