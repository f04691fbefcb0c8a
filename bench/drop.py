"""The drop benchmark: clients whose network is cut at random, and servers restarted halfway.

1,000 clients on one topic; 2 messages/s for 60 s. Each client's connection is cut every
10-20 s (at random) and the client stays offline 1-3 s before it connects again. The cut is
in the client's network, not a polite close: the client stops reading the old socket and
abandons it (nothing is sent: no close frame, no FIN; the server's writes vanish into it until
its own pings give up), as when a phone changes networks. Halfway, every server process is
restarted, one after the other (the product: each of its two workers in turn, SIGTERM, the
supervisor starts a new one; the baselines: their one process, stopped and started).

Three systems, one after the other, each with the same clients and the same schedule:
- product: ``python -m realtime.server --workers 2``; the client resumes each topic with
  ``since`` = the last seq it showed and drops any seq it already showed (as the JS client);
- tutorial: the Channels tutorial design (group_add on connect, group_send), one daphne;
- raw: a raw ``websockets`` broadcast server fed by Redis PUBLISH.
The baselines have no resume: what is published while a client is away is gone for it.

Figures per system: delivery rate (distinct messages shown / clients x messages), duplicates
shown to the application, and the replay latency p50/p99: publish to arrival for messages
that arrived after a reconnect but were published before it (what the resume brought).

    python bench/drop.py [--clients 1000] [--seconds 60] [--rate 2] [--out bench/drop.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from realtime.embedded import EmbeddedRedis, free_port, wait_for_port  # noqa: E402

CUT_EVERY = (10.0, 20.0)
OFFLINE = (1.0, 3.0)
ABANDON_AFTER = 40.0  # an abandoned socket is aborted after this (the server gave up first)


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DropClient:
    """One visitor: connects, (product) subscribes with ``since``, shows messages, and is cut
    off at random times."""

    def __init__(self, url: str, topic: str | None, origin: str, stats: Stats):
        self.url, self.topic, self.origin, self.stats = url, topic, origin, stats
        self.last_seq: int | None = None
        self.shown: set[int] = set()  # message indexes shown to the application
        self.reconnected_at = 0.0  # wall time (ns) of the latest reconnect
        self.connects = 0
        self.abandoned: list = []

    async def run(self, until: float) -> None:
        from websockets.asyncio.client import connect

        loop = asyncio.get_running_loop()
        attempt = 0
        while loop.time() < until:
            try:
                ws = await connect(
                    self.url,
                    subprotocols=["realtime.v1"],
                    origin=self.origin,
                    open_timeout=10,
                    ping_interval=None,
                    max_queue=None,
                )
            except Exception:
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))
                continue
            attempt = 0
            self.connects += 1
            if self.connects > 1:
                self.reconnected_at = time.time_ns()
            cut_at = loop.time() + random.uniform(*CUT_EVERY)
            reader = loop.create_task(self.read(ws))
            try:
                async with asyncio.timeout_at(min(cut_at, until)):
                    await asyncio.shield(reader)
                # The server closed it (a restart): come back after a little jitter.
                await asyncio.sleep(random.uniform(0, 0.5))
                continue
            except TimeoutError:
                pass
            reader.cancel()
            if loop.time() >= until:
                await ws.close()
                return
            # The network is cut: stop reading, send nothing, leave the socket as it is.
            ws.transport.pause_reading()
            self.abandoned.append(ws)
            loop.call_later(ABANDON_AFTER, ws.transport.abort)
            self.stats.cuts += 1
            await asyncio.sleep(random.uniform(*OFFLINE))

    async def read(self, ws) -> None:
        try:
            if self.topic is not None:
                welcome = json.loads(await ws.recv())
                assert welcome["type"] == "welcome", welcome
                frame = {"type": "subscribe", "topic": self.topic}
                if self.last_seq is not None:
                    frame["since"] = self.last_seq
                await ws.send(json.dumps(frame))
            async for text in ws:
                self.on_text(text)
        except Exception:
            return

    def on_text(self, text: str) -> None:
        frame = json.loads(text)
        if frame.get("type") != "message":
            return
        now = time.time_ns()
        data = frame["data"]
        if self.topic is not None:  # the product's client: seq decides what is shown
            seq = frame["seq"]
            if self.last_seq is not None and seq <= self.last_seq:
                self.stats.dropped_by_seq += 1
                return
            self.last_seq = seq
        i = data["i"]
        if i in self.shown:
            self.stats.duplicates_shown += 1
            return
        self.shown.add(i)
        if self.reconnected_at and data["t"] < self.reconnected_at:
            self.stats.replay_ms.append((now - data["t"]) / 1e6)


class Stats:
    def __init__(self) -> None:
        self.cuts = 0
        self.duplicates_shown = 0
        self.dropped_by_seq = 0
        self.replay_ms: list[float] = []


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class System:
    """One server under test, started and restarted the same way every run."""

    def __init__(self, name: str, env: dict, workdir: Path):
        self.name, self.env, self.workdir = name, env, workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def command(self) -> tuple[list[str], Path]:
        from realtime.server import daphne_command

        if self.name == "product":
            return [PY, "-m", "realtime.server", "--port", str(self.port), "--workers", "2"], ROOT
        if self.name == "tutorial":
            command = daphne_command(
                "127.0.0.1", self.port, application="tutorial_asgi:application"
            )
            return command, BENCH
        return [PY, "raw_server.py", "--port", str(self.port)], BENCH

    def start(self) -> None:
        self.starts += 1
        command, cwd = self.command()
        log = open(self.workdir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"prom-{self.name}")}
        self.proc = subprocess.Popen(
            ["bash", "-c", "ulimit -n $(ulimit -Hn); exec " + shlex.join(command)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)
        if self.name == "product":
            deadline = time.monotonic() + 60
            while len(psutil.Process(self.proc.pid).children()) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the product's workers did not start")
                time.sleep(0.1)

    def restart(self) -> None:
        """Every process of the system, one after the other."""
        assert self.proc is not None
        if self.name == "product":
            for _ in range(2):
                before = {c.pid for c in psutil.Process(self.proc.pid).children()}
                victim = min(before)
                os.kill(victim, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while True:  # until the supervisor has started its replacement
                    now = {c.pid for c in psutil.Process(self.proc.pid).children()}
                    if len(now) == 2 and victim not in now:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("no replacement worker")
                    time.sleep(0.05)
                time.sleep(1.0)  # the new worker serves before the next one stops
            return
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def publisher(env: dict, mode: str, topic: str, count: int, rate: float) -> subprocess.Popen:
    return subprocess.Popen(
        [PY, str(BENCH / "publisher.py"), "--mode", mode, "--topic", topic]
        + ["--count", str(count), "--rate", str(rate)],
        cwd=ROOT,
        env=env,
    )


async def run_system(system: System, clients: int, seconds: float, rate: float, topic: str) -> dict:
    url = f"ws://127.0.0.1:{system.port}/ws/"
    origin = f"http://127.0.0.1:{system.port}"
    stats = Stats()
    product = system.name == "product"
    visitors = [DropClient(url, topic if product else None, origin, stats) for _ in range(clients)]
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    warmup = 5.0
    until = loop.time() + warmup + seconds + 15.0  # clients stay to receive the replays
    tasks = []
    for visitor in visitors:  # opened over the warm-up, as visitors arrive
        tasks.append(loop.create_task(visitor.run(until)))
        await asyncio.sleep(warmup / clients / 2)
    await asyncio.sleep(warmup / 2)
    mode = "product" if product else system.name
    pub = publisher(system.env, mode, topic, count, rate)
    await asyncio.sleep(seconds / 2)
    restart_started = time.monotonic()
    await asyncio.to_thread(system.restart)
    restart_seconds = time.monotonic() - restart_started
    await asyncio.to_thread(pub.wait)
    await asyncio.gather(*tasks, return_exceptions=True)
    for visitor in visitors:
        for ws in visitor.abandoned:
            ws.transport.abort()
    shown = sum(len(v.shown) for v in visitors)
    result = {
        "system": system.name,
        "clients": clients,
        "messages": count,
        "rate_per_s": rate,
        "seconds": seconds,
        "cuts": stats.cuts,
        "connects": sum(v.connects for v in visitors),
        "restart_seconds": round(restart_seconds, 2),
        "delivery_rate": shown / (clients * count),
        "duplicates_shown": stats.duplicates_shown,
        "duplicates_dropped_by_seq": stats.dropped_by_seq,
        "replayed": len(stats.replay_ms),
        "replay_p50_ms": round(percentile(stats.replay_ms, 50), 1),
        "replay_p99_ms": round(percentile(stats.replay_ms, 99), 1),
    }
    print(
        f"  {system.name:9} delivered {100 * result['delivery_rate']:6.2f} % "
        f"dups shown {result['duplicates_shown']} cuts {stats.cuts} "
        f"replay p50 {result['replay_p50_ms']} ms p99 {result['replay_p99_ms']} ms",
        flush=True,
    )
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r["system"] for r in results]
    rates = [100 * r["delivery_rate"] for r in results]
    bars = ax.bar(names, rates, color=["#2a7", "#c84", "#68c"][: len(names)])
    for bar, value in zip(bars, rates, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.5, f"{value:.2f} %", ha="center")
    ax.set_ylim(min(rates) - 10, 102)
    ax.set_ylabel("messages delivered (%)")
    first = results[0]
    ax.set_title(
        f"{first['clients']} clients, cut every 10-20 s, offline 1-3 s,\n"
        f"{first['rate_per_s']:g} msgs/s for {first['seconds']:g} s, every process restarted",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--systems", default="product,tutorial,raw")
    parser.add_argument("--out", default=str(BENCH / "drop.json"))
    parser.add_argument("--plot", default=str(BENCH / "drop.png"))
    args = parser.parse_args()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="drop-bench-"))
    redis = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis = EmbeddedRedis(directory=workdir / "redis").start()
        redis_url = redis.url
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{workdir / 'drop.sqlite3'}",
        REDIS_URL=redis_url,
        REDIS_PREFIX=f"drop-{os.getpid()}",
        DEBUG="0",
        SECRET_KEY="bench-" + os.urandom(24).hex(),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="project.settings",
        CHANNEL_LAYER_CAPACITY="100",
    )
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    topic = "drop"
    subprocess.run(
        [PY, "manage.py", "topics", "add", topic, "--backlog", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    scheduler = subprocess.Popen(
        [PY, "manage.py", "runscheduler"],
        cwd=ROOT,
        env=env,
        stdout=open(workdir / "scheduler.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    results = []
    try:
        for name in args.systems.split(","):
            system = System(name, env, workdir)
            system.start()
            try:
                results.append(
                    await run_system(system, args.clients, args.seconds, args.rate, topic)
                )
            finally:
                system.stop()
            if name == "product":  # the next system's run starts the topic again
                topic = f"{topic}-next"
    finally:
        scheduler.terminate()
        scheduler.wait(20)
        if redis is not None:
            redis.stop()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    plot(results, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    asyncio.run(main())
