"""Resume across processes: a client that saw seq N on one daphne process and resumes with
``since=N`` on another (which may not have received N from Redis yet) continues from N+1 with
``recovered: true``, never a reset."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from tests.helpers.processes import PYTHON, Proc, start_daphne

pytestmark = pytest.mark.e2e

RESUMES = 200
PUBLISHER = (
    "import time\nfrom realtime import publish\n"
    "start = time.monotonic()\n"
    "for i in range(100_000):\n"
    "    publish('chat', {'i': i})\n"
    "    time.sleep(max(0.0, start + (i + 1) / 400 - time.monotonic()))\n"
)


async def newest_seq(ws) -> int:
    """The newest seq this connection has received: one message, then whatever is queued
    (recv() is cancellation-safe: a timed-out read loses nothing)."""
    seq = (await next_message(ws))["seq"]
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 0.001))
        except TimeoutError:
            return seq
        if frame["type"] == "message":
            seq = frame["seq"]


async def next_message(ws) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "message":
            return frame


async def test_resume_on_another_process_continues_without_reset(live_site, tmp_path):
    site = live_site(scheduler=False)
    second, port_b = start_daphne(site.env, tmp_path / "daphne-b.log")
    publisher = Proc([PYTHON, "manage.py", "shell", "-c", PUBLISHER], site.env, tmp_path / "p.log")
    url_a, url_b = site.ws_url, f"ws://127.0.0.1:{port_b}/ws/"
    try:
        async with connect(url_a, subprotocols=["realtime.v1"]) as a:
            await a.recv()
            await a.send(json.dumps({"type": "subscribe", "topic": "chat", "since": 10**9}))
            assert json.loads(await a.recv())["type"] == "subscribed"
            for n in range(RESUMES):
                seen = await newest_seq(a)  # the newest on process A
                async with connect(
                    url_b if n % 2 == 0 else url_a, subprotocols=["realtime.v1"]
                ) as b:
                    await b.recv()
                    await b.send(json.dumps({"type": "subscribe", "topic": "chat", "since": seen}))
                    answer = json.loads(await asyncio.wait_for(b.recv(), 10))
                    assert answer["type"] == "subscribed" and answer["recovered"] is True, answer
                    following = [(await next_message(b))["seq"] for _ in range(3)]
                    assert following == [seen + 1, seen + 2, seen + 3], (seen, following)
    finally:
        publisher.stop()
        second.stop()
