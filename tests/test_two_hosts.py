"""Two hosts behind one nginx: a supervisor (two workers) and a scheduler on each of
127.0.0.2 and 127.0.0.3, one PostgreSQL, one Redis, deploy/nginx/realtime.conf with both
upstreams. A host killed whole: its clients come back through nginx on the other with
nothing lost. A rolling restart: never every client disconnected at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from realtime.embedded import free_port, wait_for_port
from tests.helpers.client import ResumingClient
from tests.helpers.processes import PYTHON, Proc, env_for, manage
from tests.test_nginx import NGINX, main_config, site_config

pytestmark = pytest.mark.e2e

HOSTS = ("127.0.0.2", "127.0.0.3")
FAST = {"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.3, "SCHEDULER_LOCK_TTL": 2.0}


class Host:
    """One machine's processes: ``python -m realtime.server --host <address> --workers 2``
    and ``manage.py runscheduler``, in process groups of their own."""

    def __init__(self, address: str, port: int, env: dict[str, str], logs):
        self.address, self.port, self.env, self.logs = address, port, env, logs
        self.server: Proc | None = None
        self.scheduler: Proc | None = None
        self.starts = 0

    def start(self) -> Host:
        self.starts += 1
        name = f"{self.address}-{self.starts}"
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.logs / f"prom-{name}")}
        command = [PYTHON, "-m", "realtime.server", "--host", self.address]
        command += ["--port", str(self.port), "--workers", "2"]
        self.server = Proc(command, env, self.logs / f"server-{name}.log")
        wait_for_port(self.port, timeout=30, host=self.address)
        self.scheduler = Proc(
            [PYTHON, "manage.py", "runscheduler"], env, self.logs / f"scheduler-{name}.log"
        )
        self.scheduler.wait_for_output("scheduler started")
        return self

    def pids(self) -> set[int]:
        if self.server is None or not self.server.alive():
            return set()
        root = psutil.Process(self.server.pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}

    def kill(self) -> None:
        """SIGKILL every process of the host at once (the machine is gone)."""
        for proc in (self.server, self.scheduler):
            if proc is not None and proc.alive():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait()

    def stop(self) -> None:
        """A clean stop (SIGTERM): sockets are closed with 1001 and clients go elsewhere."""
        for proc in (self.server, self.scheduler):
            if proc is not None:
                proc.stop()


@contextlib.contextmanager
def two_host_site(database_url: str, redis_url: str, tmp_path: Path, prefix: str, **extra: str):
    """Both hosts started behind nginx on one database and Redis: (hosts, nginx base URL,
    env); every process stopped at the end, whatever happened (bench/failover.py too)."""
    env = env_for(
        database_url,
        redis_url,
        REDIS_PREFIX=prefix,
        PROXY_HEADERS="1",
        USE_X_FORWARDED_HOST="1",
        REALTIME=json.dumps(FAST),
        **extra,
    )
    manage(env, "migrate", "--noinput")
    manage(env, "seeddemo")
    app_port, port = free_port(), free_port()
    hosts = [Host(address, app_port, env, tmp_path) for address in HOSTS]
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(main_config(nginx_dir, site_config(app_port, port, tmp_path, HOSTS)))
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(nginx_dir), "-c", str(conf)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    nginx = Proc(
        [NGINX, "-p", str(nginx_dir), "-c", str(conf)], dict(os.environ), nginx_dir / "out.log"
    )
    try:
        for host in hosts:
            host.start()
        wait_for_port(port, timeout=15)
        yield hosts, f"http://127.0.0.1:{port}", env
    finally:
        nginx.stop()
        for host in hosts:
            host.stop()


@pytest.fixture
def two_hosts(postgres_database, redis_url, tmp_path):
    """(hosts, nginx base URL, env)."""
    if not os.path.exists(NGINX):
        pytest.fail(f"No nginx at {NGINX}: scripts/test installs Debian's nginx.")
    prefix = f"hosts-{uuid.uuid4().hex[:8]}"
    with two_host_site(postgres_database, redis_url, tmp_path, prefix, ACCESS_LOG="1") as found:
        yield found


def connections_by_pid(env: dict[str, str]) -> dict[int, int]:
    """Open connections per server process, as every hub reports them to Redis (2 s)."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    found: dict[int, int] = {}
    try:
        for key in client.scan_iter(match=f"{env['REDIS_PREFIX']}:rt:hubstats:*"):
            stats = client.hgetall(key)
            if stats:
                found[int(stats[b"pid"])] = int(stats[b"connections"])
    finally:
        client.close()
    return found


async def wait_spread(hosts: list[Host], env: dict[str, str], total: int) -> None:
    """Until each host serves some of the ``total`` clients (and they add up)."""
    async with asyncio.timeout(20):
        while True:
            counts = connections_by_pid(env)
            per_host = [sum(n for pid, n in counts.items() if pid in h.pids()) for h in hosts]
            if all(per_host) and sum(per_host) == total:
                return
            await asyncio.sleep(0.2)


def publish(env: dict[str, str], slug: str, data: str) -> int:
    return int(manage(env, "publish", slug, data).stdout.strip())


async def test_a_host_killed_whole_its_clients_come_back_on_the_other(two_hosts):
    hosts, base, env = two_hosts
    ws_url = base.replace("http://", "ws://") + "/ws/"
    clients = [ResumingClient(ws_url, ["chat"], origin=base).start() for _ in range(20)]
    try:
        for c in clients:
            await asyncio.wait_for(c.subscribed.wait(), 15)
        await wait_spread(hosts, env, len(clients))
        first = await asyncio.to_thread(publish, env, "chat", json.dumps("both"))
        for c in clients:
            await c.wait_for("chat", first)
        hosts[0].kill()
        last = first
        for i in range(10):
            last = await asyncio.to_thread(publish, env, "chat", json.dumps(f"after {i}"))
        for c in clients:
            await c.wait_for("chat", last, timeout=30)
            assert c.received["chat"] == list(range(first, last + 1))
            assert c.raw["chat"] == c.received["chat"]  # nothing twice
        assert sum(c.connects for c in clients) > len(clients)  # some came back via nginx
        counts = connections_by_pid(env)
        assert all(pid in hosts[1].pids() for pid, n in counts.items() if n)
    finally:
        for c in clients:
            await c.stop()


async def test_a_rolling_restart_never_disconnects_every_client_at_once(two_hosts):
    hosts, base, env = two_hosts
    ws_url = base.replace("http://", "ws://") + "/ws/"
    clients = [ResumingClient(ws_url, ["chat"], origin=base).start() for _ in range(20)]
    lowest = len(clients)
    watching = True

    async def watch() -> None:
        nonlocal lowest
        while watching:
            lowest = min(lowest, sum(c.ws is not None for c in clients))
            await asyncio.sleep(0.005)

    try:
        for c in clients:
            await asyncio.wait_for(c.subscribed.wait(), 15)
        await wait_spread(hosts, env, len(clients))
        watcher = asyncio.get_running_loop().create_task(watch())
        first = await asyncio.to_thread(publish, env, "chat", json.dumps("before"))
        last = first
        for host in hosts:
            await asyncio.to_thread(host.stop)
            last = await asyncio.to_thread(publish, env, "chat", json.dumps("during"))
            await asyncio.to_thread(host.start)
        last = await asyncio.to_thread(publish, env, "chat", json.dumps("after"))
        for c in clients:
            await c.wait_for("chat", last, timeout=30)
            assert c.received["chat"] == list(range(first, last + 1))
        watching = False
        await watcher
        assert lowest > 0, "every client was disconnected at once"
        assert sum(c.connects for c in clients) > len(clients)  # the restarts moved them
    finally:
        for c in clients:
            await c.stop()
