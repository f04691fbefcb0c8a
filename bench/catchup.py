"""The catch-up benchmark: clients away while messages are published, then back at once.

1,000 clients subscribe to one topic, then all go away (their sockets closed). While they are
away, 750 messages are published at 50 msgs/s (15 s) through ``realtime.publish()``. Then every
client connects again (at most ``--concurrency`` handshakes in flight, as a crowd coming back
after a network blip) and subscribes with ``since`` = the last seq it saw, while publishing
goes on at 50 msgs/s. A client has *caught up* when it has received the last message published
while it was away; the figure is the time from the start of its reconnect (TCP connect,
handshake, subscribe, replay) to then. Every client must receive every seq once and in order
(checked: lost, duplicates, out of order).

One product server (``python -m realtime.server``: a worker per CPU, two here; SQLite), the load
generator (raw asyncio protocols, as bench/loadgen.py) and the publisher on the same machine.

    python bench/catchup.py [--clients 1000] [--away 15] [--rate 50] [--runs 3]
                            [--baseline PATH_TO_A_CHECKOUT] [--out bench/catchup.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from loadgen import Client, Stats, raise_fd_limit  # noqa: E402

from realtime.embedded import EmbeddedRedis, free_port, wait_for_port  # noqa: E402

TOPIC = "catchup"


class Resumer(Client):
    """A client that tracks the topic's seq: in order, each once; knows when it caught up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last = 0  # the last seq received
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.goal = 0  # caught up once this seq arrived
        self.started = 0.0
        self.caught_up: asyncio.Future | None = None
        self.latest: int | None = None  # the subscribed frame's seq

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(b'{"type":"message"'):
            at = payload.index(b'"seq":') + 6
            seq = int(payload[at : payload.index(b",", at)])
            if seq <= self.last:
                self.duplicates += 1
                return
            if seq != self.last + 1:
                self.out_of_order += 1
            self.last = seq
            self.received += 1
            if seq >= self.goal and self.caught_up is not None and not self.caught_up.done():
                self.caught_up.set_result(time.monotonic() - self.started)
            return
        frame = json.loads(payload)
        if frame.get("type") == "subscribed":
            self.latest = frame["seq"]
            if self.subscribed is not None and not self.subscribed.done():
                self.subscribed.set_result(True)


async def connect(port: int, since: int | None, stats: Stats) -> Resumer:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    frame = {"type": "subscribe", "topic": TOPIC}
    if since is not None:
        frame["since"] = since
    host = f"127.0.0.1:{port}"
    client = Resumer(host, "/ws/", f"http://{host}", json.dumps(frame), stats, ready)
    client.last = since or 0
    client.started = time.monotonic()
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    await asyncio.wait_for(ready, 60)
    return client


def publisher(env: dict, count: int, rate: float) -> subprocess.Popen:
    return subprocess.Popen(
        [PY, str(BENCH / "publisher.py"), "--mode", "product", "--topic", TOPIC]
        + ["--count", str(count), "--rate", str(rate)],
        cwd=ROOT,
        env=env,
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def run(port: int, env: dict, clients: int, away: float, rate: float, concurrency: int):
    stats = Stats(1, 1)
    gate = asyncio.Semaphore(concurrency)

    async def first(_: int) -> Resumer:
        async with gate:
            client = await connect(port, None, stats)
            await asyncio.wait_for(client.send_subscribe(), 60)
            return client

    crowd = await asyncio.gather(*(first(k) for k in range(clients)))
    since = max(c.latest or 0 for c in crowd)
    for client in crowd:  # all away: the sockets closed
        client.transport.close()
    count = int(away * rate)
    goal = since + count
    print(f"  {clients} clients away at seq {since}; publishing {count}", flush=True)
    await asyncio.to_thread(publisher(env, count, rate).wait)
    live = publisher(env, int(rate * 60), rate)  # publishing goes on while they come back

    async def back(_: int) -> Resumer:
        loop = asyncio.get_running_loop()
        async with gate:
            client = await connect(port, since, stats)
            client.goal = goal
            client.caught_up = loop.create_future()
            client.send_subscribe()
        await asyncio.wait_for(client.caught_up, 120)
        return client

    returned = time.monotonic()
    back_again = await asyncio.gather(*(back(k) for k in range(clients)))
    everyone = time.monotonic() - returned
    live.send_signal(signal.SIGTERM)
    live.wait(20)
    times = [c.caught_up.result() for c in back_again]
    result = {
        "clients": clients,
        "away_s": away,
        "rate_per_s": rate,
        "missed_each": count,
        "concurrency": concurrency,
        "caught_up_p50_s": round(percentile(times, 50), 2),
        "caught_up_p90_s": round(percentile(times, 90), 2),
        "caught_up_p99_s": round(percentile(times, 99), 2),
        "caught_up_max_s": round(max(times), 2),
        "everyone_s": round(everyone, 2),
        "duplicates": sum(c.duplicates for c in back_again),
        "out_of_order": sum(c.out_of_order for c in back_again),
        "lost": sum(max(0, goal - since - c.received) for c in back_again),
    }
    for client in back_again:
        client.transport.close()
    return result


class Server:
    """The product from one checkout (``root``), with a database and Redis prefix of its own."""

    def __init__(self, root: Path, workdir: Path, redis_url: str, name: str):
        self.root, self.name = root, name
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{workdir / f'{name}.sqlite3'}",
            REDIS_URL=redis_url,
            REDIS_PREFIX=f"catchup-{name}-{os.getpid()}",
            DEBUG="0",
            SECRET_KEY="bench-" + os.urandom(24).hex(),
            LOG_LEVEL="WARNING",
            DJANGO_SETTINGS_MODULE="project.settings",
            PYTHONPATH=str(root),
        )
        self.log = workdir / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def setup(self) -> None:
        manage = [PY, "manage.py"]
        run = {"cwd": self.root, "env": self.env, "check": True}
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], **run)
        subprocess.run(
            [*manage, "topics", "add", TOPIC, "--backlog", "0", "--retain", "100000"],
            stdout=subprocess.DEVNULL,
            **run,
        )

    def start(self) -> None:
        self.port = free_port()
        command = [PY, "-m", "realtime.server", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            ["bash", "-c", "ulimit -n $(ulimit -Hn); exec " + shlex.join(command)],
            cwd=self.root,
            env=self.env,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--away", type=float, default=15.0, help="seconds away")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--baseline",
        help="a checkout of the previous release (git worktree add): each run measures it "
        "first, then this checkout, on fresh servers",
    )
    parser.add_argument("--out", default=str(BENCH / "catchup.json"))
    args = parser.parse_args()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="catchup-bench-"))
    redis = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis = EmbeddedRedis(directory=workdir / "redis").start()
        redis_url = redis.url
    roots = [("before", Path(args.baseline).resolve())] if args.baseline else []
    roots.append(("after" if args.baseline else "product", ROOT))
    results = []
    try:
        for k in range(args.runs):
            for name, root in roots:
                server = Server(root, workdir, redis_url, f"{name}-{k + 1}")
                server.setup()
                server.start()
                try:
                    result = await run(
                        server.port,
                        server.env,
                        args.clients,
                        args.away,
                        args.rate,
                        args.concurrency,
                    )
                finally:
                    server.stop()
                result.update(server=name, run=k + 1, revision=revision(root))
                print(
                    f"  {name:8} caught up p50 {result['caught_up_p50_s']} s "
                    f"p99 {result['caught_up_p99_s']} s max {result['caught_up_max_s']} s; "
                    f"lost {result['lost']} dup {result['duplicates']} "
                    f"out of order {result['out_of_order']}",
                    flush=True,
                )
                results.append(result)
    finally:
        if redis is not None:
            redis.stop()
    out = Path(args.out)
    out.write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": results}, indent=2
        )
        + "\n"
    )
    print(f"wrote {out}")


def revision(root: Path) -> str:
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], cwd=root, capture_output=True, text=True
    )
    return done.stdout.strip()[:80]


if __name__ == "__main__":
    asyncio.run(main())
