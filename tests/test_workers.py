"""``python -m realtime.server --workers N``: one port served by N supervised daphne
processes; a killed worker is replaced and its clients resume on the others; a stop signal
closes every socket with 1001 within 15 s; /metrics sums the workers."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from realtime.supervisor import listening_sockets, remove_stale_metrics
from tests.helpers.client import ResumingClient
from tests.helpers.processes import ROOT
from tests.test_ops import sample


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def workers_of(site) -> list[int]:
    return [p.pid for p in psutil.Process(site.daphne.pid).children()]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s")
        time.sleep(0.1)


def serving_pids(site, requests: int = 60) -> set[int]:
    """Pids that answered /readyz over ``requests`` new connections."""
    return {json.loads(get(site.url + "/readyz")[1])["pid"] for _ in range(requests)}


async def test_two_workers_share_one_port_and_a_killed_one_is_replaced(live_site):
    site = live_site(workers=2)
    workers = await asyncio.to_thread(wait_until, lambda: len(workers_of(site)) == 2, 15, "2")
    workers = workers_of(site)
    assert await asyncio.to_thread(serving_pids, site) == set(workers)

    clients = [ResumingClient(site.ws_url, ["chat"]).start() for _ in range(20)]
    try:
        for client in clients:
            await asyncio.wait_for(client.subscribed.wait(), 15)

        def summed() -> str | None:
            body = get(site.url + "/metrics")[1]
            return body if sample(body, "realtime_connections_open") == 20 else None

        body = await asyncio.to_thread(wait_until, summed, 10, "20 connections in /metrics")
        assert sample(body, "realtime_hubs_subscribed") == 2  # one per worker, summed

        first = await asyncio.to_thread(site.publish, "chat", json.dumps("before"))
        victim = workers[0]
        psutil.Process(victim).kill()
        last = first
        for i in range(10):
            last = await asyncio.to_thread(site.publish, "chat", json.dumps(f"during {i}"))

        def replaced() -> list[int] | None:
            now = workers_of(site)
            return now if len(now) == 2 and victim not in now else None

        now = await asyncio.to_thread(wait_until, replaced, 20, "replacement worker")
        assert workers[1] in now
        for client in clients:
            await client.wait_for("chat", last, timeout=30)
            assert client.received["chat"] == list(range(first, last + 1))
        assert sum(c.connects for c in clients) > 20  # the victim's clients came back
        await asyncio.to_thread(
            wait_until, lambda: serving_pids(site) == set(now), 20, "both workers serving"
        )
        assert f"worker 0 (pid {victim}) exited with -9" in site.daphne.output()
    finally:
        for client in clients:
            await client.stop()


async def test_sigterm_closes_every_socket_with_1001_and_exits_within_15_s(live_site):
    site = live_site(workers=2, scheduler=False)
    wait_until(lambda: len(workers_of(site)) == 2, 15, "2 workers")
    clients = [ResumingClient(site.ws_url, ["chat"], base_delay=5).start() for _ in range(10)]
    try:
        for client in clients:
            await asyncio.wait_for(client.subscribed.wait(), 15)
        workers = workers_of(site)
        started = time.monotonic()
        site.daphne.popen.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(site.daphne.popen.wait, 15)
        took = time.monotonic() - started
        assert code == 0 and took < 15
        for client in clients:
            await asyncio.wait_for(_closed(client), 5)
            assert client.close_codes[0] == 1001
        assert not any(psutil.pid_exists(pid) for pid in workers)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", site.port), timeout=2).close()
    finally:
        for client in clients:
            await client.stop()


async def _closed(client: ResumingClient) -> None:
    while not client.close_codes:
        await asyncio.sleep(0.02)


def test_killed_supervisor_takes_its_workers_with_it(live_site):
    site = live_site(workers=2, scheduler=False)
    workers = wait_until(lambda: len(workers_of(site)) == 2 and workers_of(site), 15, "workers")
    site.daphne.popen.kill()
    site.daphne.popen.wait()
    wait_until(lambda: not any(psutil.pid_exists(p) for p in workers), 15, "workers gone")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "two"], "invalid int value"),
        (["--port", "70000"], "--port must be 0-65535"),
        (["--host", "::1"], "IPv4"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "realtime.server", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr


def test_a_port_in_use_is_a_clear_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "realtime.server", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_sockets_share_the_port_and_stale_metrics_files_go(tmp_path):
    sockets = listening_sockets("127.0.0.1", 0, 3, 16)
    try:
        assert len({s.getsockname()[1] for s in sockets}) == 1
    finally:
        for sock in sockets:
            sock.close()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{dead}.db").write_bytes(b"")
    import os

    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")
    assert remove_stale_metrics(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]
