"""Faults with real processes (issue 5): Redis, daphne, the scheduler and the database go away
and come back; "nothing lost" is checked by comparing what each client got with the seqs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from realtime.embedded import EmbeddedRedis
from tests.helpers.client import ResumingClient
from tests.helpers.processes import PYTHON, Proc, Site, manage, start_scheduler
from tests.helpers.rawws import client_frame, handshake, wait_closed

pytestmark = pytest.mark.e2e

FAST = {"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.3, "SCHEDULER_LOCK_TTL": 2.0}
PUBLISHER = (
    "import sys, time; from realtime import publish\n"
    "for i in range({count}):\n"
    "    m = publish('chat', {{'i': i}})\n"
    "    print(m.seq, flush=True)\n"
    "    time.sleep({pause})\n"
)


@pytest.fixture
def redis_server(tmp_path):
    """A Redis of this test's own, so that it can be stopped and started."""
    server = EmbeddedRedis(directory=tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def site(live_site, redis_server):
    return live_site(redis=redis_server.url, realtime=FAST)


def url(site: Site) -> str:
    return f"ws://127.0.0.1:{site.port}/ws/"


async def clients(site: Site, n: int, topic: str = "chat") -> list[ResumingClient]:
    started = [ResumingClient(url(site), [topic]).start() for _ in range(n)]
    for c in started:
        await asyncio.wait_for(c.subscribed.wait(), 15)
    return started


async def stop_all(found: list[ResumingClient]) -> None:
    for c in found:
        await c.stop()


def start_publisher(site: Site, count: int, pause: float) -> Proc:
    code = PUBLISHER.format(count=count, pause=pause)
    return Proc(
        [PYTHON, "manage.py", "shell", "-c", code],
        site.env,
        site.tmp_path / f"publisher-{uuid.uuid4().hex[:6]}.log",
    )


async def wait_output(proc: Proc, text: str, timeout: float = 30) -> None:
    await asyncio.to_thread(proc.wait_for_output, text, timeout)


async def published_lines(proc: Proc) -> int:
    return len([line for line in proc.output().splitlines() if line.strip().isdigit()])


async def test_redis_restart_while_publishing_loses_nothing(site, redis_server):
    subscribers = await clients(site, 3)
    publisher = start_publisher(site, 60, 0.03)
    await subscribers[0].wait_for("chat", 10)
    redis_server.stop()
    before = await published_lines(publisher)
    await wait_output(publisher, f"\n{before + 5}\n")  # stored while Redis is away
    redis_server.start()
    await asyncio.to_thread(publisher.popen.wait, 60)
    assert publisher.popen.returncode == 0, publisher.output()
    for c in subscribers:
        await c.wait_for("chat", 60, timeout=30)
        assert c.raw["chat"] == list(range(1, 61))  # every seq, once, in order
    await stop_all(subscribers)


async def test_publishing_while_redis_is_down_is_delivered_after_it_returns(site, redis_server):
    subscribers = await clients(site, 2)
    redis_server.stop()
    for i in range(3):
        assert site.publish("chat", json.dumps({"while": "down", "i": i})) == i + 1
    redis_server.start()
    for c in subscribers:
        await c.wait_for("chat", 3, timeout=30)
        assert c.raw["chat"] == [1, 2, 3]
    await stop_all(subscribers)


async def test_daphne_restart_clients_resume_with_since_and_miss_nothing(site):
    subscribers = await clients(site, 3)
    for i in range(5):
        site.publish("chat", json.dumps(i))
    for c in subscribers:
        await c.wait_for("chat", 5)
    site.stop_daphne()
    for i in range(5, 10):
        site.publish("chat", json.dumps(i))
    site.start_daphne()
    for c in subscribers:
        await c.wait_for("chat", 10, timeout=30)
        assert c.connects == 2
        assert c.raw["chat"] == list(range(1, 11))  # resumed with since: nothing twice
    await stop_all(subscribers)


async def test_scheduler_killed_mid_sweep_then_restarted_delivers_everything_once(
    tmp_path, redis_server, live_site
):
    running = live_site(
        redis=redis_server.url, realtime={**FAST, "OUTBOX_BATCH": 3}, scheduler=False
    )
    try:
        subscribers = await clients(running, 2)
        redis_server.stop()
        for i in range(12):
            running.publish("chat", json.dumps(i))  # stored; fan-out fails
        redis_server.start()
        scheduler = start_scheduler(running.env, tmp_path / "scheduler-a.log")
        await wait_output(scheduler, "Outbox sweep sent")
        scheduler.stop(signal.SIGKILL)  # in the middle of the outbox (3 per sweep)
        scheduler = start_scheduler(running.env, tmp_path / "scheduler-b.log")
        running.scheduler = scheduler
        for c in subscribers:
            await c.wait_for("chat", 12, timeout=30)
            assert c.raw["chat"] == list(range(1, 13))
        await asyncio.to_thread(_wait_outbox_empty, running)  # the new scheduler finished it
        await stop_all(subscribers)
    finally:
        running.stop()


def _wait_outbox_empty(site: Site, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        out = manage(
            site.env,
            "shell",
            "-c",
            "from realtime.models import Message; "
            "print(Message.objects.filter(fanned_out_at__isnull=True).count())",
        )
        if out.stdout.strip().splitlines()[-1] == "0":
            return
        assert time.monotonic() < deadline, "the outbox never emptied"


async def test_two_schedulers_only_one_active_and_the_other_takes_over(
    tmp_path, redis_server, live_site
):
    running = live_site(redis=redis_server.url, realtime=FAST, scheduler=False)
    first = start_scheduler(running.env, tmp_path / "s1.log")
    second = start_scheduler(running.env, tmp_path / "s2.log")
    try:
        await wait_output(first, "scheduler ")
        await wait_output(second, "scheduler ")
        await asyncio.to_thread(_wait_any_active, first, second)
        if "scheduler active" in first.output():
            active, standby = first, second
        else:
            active, standby = second, first
        await wait_output(standby, "standby")
        assert "standby" in standby.output() and "scheduler active" not in standby.output()
        assert "feed published" not in standby.output()  # feeds ran in one scheduler only
        active.stop(signal.SIGKILL)
        await wait_output(standby, "scheduler active", timeout=15)  # lock TTL 2 s
        await wait_output(standby, "feed published", timeout=15)
    finally:
        first.stop()
        second.stop()
        running.stop()


def _wait_any_active(a: Proc, b: Proc, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while "scheduler active" not in a.output() + b.output():
        assert time.monotonic() < deadline, a.output() + b.output()
        time.sleep(0.05)


async def test_server_shutdown_closes_1001_and_clients_reconnect_with_jitter(site):
    subscribers = await clients(site, 8)
    site.stop_daphne()  # SIGTERM
    site.start_daphne()
    for c in subscribers:
        async with asyncio.timeout(30):
            while c.connects < 2:
                await asyncio.sleep(0.05)
        assert c.close_codes[0] == 1001
    first_delays = [c.reconnect_delays[0] for c in subscribers]
    assert all(0 <= d <= 0.05 for d in first_delays)
    assert len(set(first_delays)) == len(first_delays)  # jittered, not all at once
    site.publish("chat", json.dumps("after restart"))
    for c in subscribers:
        await c.wait_for("chat", 1)
    await stop_all(subscribers)


async def test_real_server_closes_oversized_frame_1009(site):
    async with connect(url(site), subprotocols=["realtime.v1"], max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "id": "x" * 70_000}))
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


def raw_socket_client(port: int, topic: str | None, rcvbuf: int = 4096) -> socket.socket:
    """A socket that does the handshake (and subscribes) and then reads nothing."""
    sock = handshake(port, rcvbuf=rcvbuf)
    if topic:
        sock.sendall(client_frame(json.dumps({"type": "subscribe", "topic": topic})))
    return sock


async def test_slow_reader_is_dropped_before_its_buffer_grows(redis_server, live_site):
    running = live_site(
        redis=redis_server.url, realtime={**FAST, "MAX_SEND_BUFFER": 100_000}, scheduler=False
    )
    try:
        sock = raw_socket_client(running.port, "chat")
        await asyncio.to_thread(
            manage,
            running.env,
            "shell",
            "-c",
            "from realtime import publish\nfor i in range(200): publish('chat', 'x' * 20000)",
        )
        await wait_output(running.daphne, "dropping slow reader")
        received = await asyncio.to_thread(wait_closed, sock, 20)
        assert received < 200 * 20000  # dropped, not everything buffered for it
        sock.close()
    finally:
        running.stop()


async def test_silent_peer_is_dropped_by_server_pings(redis_server, live_site):
    running = live_site(
        redis=redis_server.url,
        realtime=FAST,
        scheduler=False,
        daphne_options={"ping_interval": 1, "ping_timeout": 1},
    )
    try:
        sock = raw_socket_client(running.port, None)  # never answers a ping
        received = await asyncio.to_thread(wait_closed, sock, 20)
        assert received > 0  # the welcome and pings came, then the server closed it
        sock.close()
    finally:
        running.stop()


async def test_database_outage_is_logged_survived_and_recovered(
    tmp_path, redis_server, postgres_via_proxy, live_site
):
    database_url, start_db, stop_db = postgres_via_proxy
    running = live_site(redis=redis_server.url, realtime=FAST, DATABASE_URL=database_url)
    try:
        async with connect(url(running), subprotocols=["realtime.v1"]) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "topic": "chat"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            stop_db()
            await ws.send(json.dumps({"type": "subscribe", "topic": "news", "id": 1}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert (answer["type"], answer["code"], answer["id"]) == ("error", "server_error", 1)
            await ws.send(json.dumps({"type": "ping", "id": 2}))
            assert json.loads(await ws.recv()) == {"type": "pong", "id": 2}  # still serving
            await wait_output(running.scheduler, "tick failed (OperationalError")
            start_db()
            await wait_output(running.scheduler, "scheduler recovered", timeout=40)
            await ws.send(json.dumps({"type": "subscribe", "topic": "news", "id": 3}))
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
            assert frames[0]["type"] == "subscribed" and frames[1]["topic"] == "news"
            running.publish("chat", json.dumps("back"))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert (frame["topic"], frame["data"]) == ("chat", "back")
        assert "server error on" in running.daphne.output()  # the consumer logged it
    finally:
        running.stop()
