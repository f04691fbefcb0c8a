"""Topics per object: many topics with one subscriber each, and presence for a crowd.

1. ``--topics`` topics (default 20,000), one subscriber each (bench/loadgen.py, one client per
   topic), over ``--workers`` daphne workers on one port (``python -m realtime.server``);
   ``--rate`` messages a second (default 2,000) spread over the topics, each topic getting
   ``--rounds`` messages. Reported: deliveries, lost, duplicates, p50/p99 (publish to
   arrival), and per worker the CPU seconds it spent while the messages flowed and, where
   the code reports it (per-topic subscriptions), how many topic messages it read from Redis.
   ``--code PATH`` runs another checkout (e.g. the release before, which PSUBSCRIBEd every
   worker to every topic) on the same database and Redis, for a before/after.
2. ``--presence N``: N clients join one presence topic (the demo's ``chat``) over 10 s and
   stay 3 s: presence frames and bytes each client received, in all and per join.

Usage: python bench/topics.py [--code PATH] [--topics N] [--rate R] [--presence N]
Prints one JSON line per part; ``--out FILE`` also appends them to FILE (bench/topics.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

PUBLISH = """
import time, sys, django
django.setup()
from realtime.models import Topic
from realtime.outbox import publish_many
topics = {{t.slug: t for t in Topic.objects.filter(slug__startswith='t-')}}
names = sorted(topics)
rate, rounds, batch = {rate}, {rounds}, 20
start = time.monotonic()
sent = 0
for r in range(rounds):
    for at in range(0, len(names), batch):
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk = names[at:at + batch]
        publish_many([(topics[n], {{'t': time.time_ns(), 'i': r}}) for n in chunk], source='api')
        sent += len(chunk)
print(time.monotonic() - start)
"""

MAKE_TOPICS = """
from realtime.models import Topic
Topic.objects.bulk_create(
    [Topic(slug=f't-{{i}}', backlog=0, retention=100) for i in range({n})], batch_size=2000
)
"""


def spawn(command: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    line = "ulimit -n $(ulimit -Hn); exec " + shlex.join(command)
    return subprocess.Popen(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,  # noqa: SIM115
    )


def hub_reads(redis_url: str, prefix: str) -> dict[str, int]:
    from realtime import cluster

    client = cluster.sync_client(redis_url)
    found = {}
    for key in client.scan_iter(f"{prefix}:rt:hubstats:*"):
        stats = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        found[stats.get("pid", "?")] = int(stats.get("read", -1))
    return found


def worker_cpu(supervisor: int) -> dict[int, float]:
    found = {}
    for child in psutil.Process(supervisor).children():
        times = child.cpu_times()
        found[child.pid] = times.user + times.system
    return found


def many_topics(args, env: dict, workdir: Path, code: Path) -> dict:
    from realtime.embedded import free_port, wait_for_port

    subprocess.run(
        [PY, "manage.py", "shell", "-c", MAKE_TOPICS.format(n=args.topics)],
        cwd=code,
        env=env,
        check=True,
    )
    port = free_port()
    server = spawn(
        [PY, "-m", "realtime.server", "--port", str(port), "--workers", str(args.workers)],
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prom")},
        workdir / "server.log",
        code,
    )
    try:
        wait_for_port(port, timeout=60)
        while len(psutil.Process(server.pid).children()) < args.workers:
            time.sleep(0.1)
        # One load generator holds at most 10,000 sockets (this machine allows 20,000 open
        # files a process): several, each with its own range of topics.
        per = 10_000
        gens, ready = [], {"open_seconds": 0.0, "subscribe_seconds": 0.0}
        for first in range(0, args.topics, per):
            command = [
                PY,
                str(BENCH / "loadgen.py"),
                "--url",
                f"ws://127.0.0.1:{port}/ws/",
                "--clients",
                str(min(per, args.topics - first)),
                "--count",
                str(args.rounds),
                "--topic-prefix",
                "t-",
                "--topic-offset",
                str(first),
                "--drain",
                "5",
                "--max-wait",
                "30",
            ]
            gens.append(
                subprocess.Popen(
                    ["bash", "-c", "ulimit -n $(ulimit -Hn); exec " + shlex.join(command)],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for gen in gens:
            line = json.loads(gen.stdout.readline())
            for name in ready:
                ready[name] = max(ready[name], line[name])
        time.sleep(3)  # presence and stats written, hubs settled
        reads_before = hub_reads(env["REDIS_URL"], env["REDIS_PREFIX"])
        cpu_before = worker_cpu(server.pid)
        code_text = PUBLISH.format(rate=args.rate, rounds=args.rounds)
        took = (
            subprocess.run(
                [PY, "-c", code_text], cwd=code, env=env, check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        results = []
        for gen in gens:
            gen.stdin.write("published\n")
            gen.stdin.flush()
        for gen in gens:
            results.append(json.loads(gen.stdout.readline()))
            gen.wait(60)
        cpu_after = worker_cpu(server.pid)
        # The hubs write their figures every 2 s: read until two readings agree.
        reads_after, deadline = {}, time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(2.2)
            found = hub_reads(env["REDIS_URL"], env["REDIS_PREFIX"])
            if found == reads_after:
                break
            reads_after = found
    finally:
        server.terminate()
        server.wait(30)
    published = args.topics * args.rounds
    reads = {
        pid: reads_after.get(pid, 0) - reads_before.get(pid, 0)
        for pid in reads_after
        if reads_after.get(pid, -1) >= 0
    }
    return {
        "part": "many-topics",
        "redis": "cluster (3 masters)" if env["REDIS_URL"].startswith("redis+cluster") else "one",
        "code": str(code),
        "topics": args.topics,
        "workers": args.workers,
        "rate": args.rate,
        "published": published,
        "publish_seconds": float(took),
        "open_seconds": ready["open_seconds"],
        "subscribe_seconds": ready["subscribe_seconds"],
        "received": sum(r["received"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        # Each load generator's own percentiles (they saw about the same number of messages).
        "p50_ms": [round(r["p50_ms"], 1) for r in results],
        "p99_ms": [round(r["p99_ms"], 1) for r in results],
        "worker_cpu_seconds": sorted(
            round(cpu_after[p] - cpu_before.get(p, 0.0), 2) for p in cpu_after
        ),
        "messages_read_per_worker": sorted(reads.values()),
    }


async def crowd_presence(args, url: str) -> dict:
    """``args.presence`` clients join ``chat`` with presence over 10 s and stay 3 s."""
    from websockets.asyncio.client import connect

    counts = {"frames": 0, "bytes": 0, "joins_seen": 0}
    final_counts: list[int] = []
    sockets = []

    async def reader(ws) -> None:
        last = 0
        try:
            async for text in ws:
                if '"type":"presence' in text:
                    counts["frames"] += 1
                    counts["bytes"] += len(text.encode())
                    frame = json.loads(text)
                    last = frame["count"]
        except Exception:
            pass
        final_counts.append(last)

    tasks = []
    spread = 10.0 / args.presence
    start = time.monotonic()
    for k in range(args.presence):
        delay = start + k * spread - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ws = await connect(
            url, subprotocols=["realtime.v1"], origin=url.replace("ws", "http", 1).split("/ws/")[0]
        )
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "subscribe", "topic": "chat", "presence": True}))
        sockets.append(ws)
        tasks.append(asyncio.create_task(reader(ws)))
    await asyncio.sleep(3)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*tasks)
    return {
        "part": "presence",
        "clients": args.presence,
        "join_seconds": 10.0,
        "presence_frames": counts["frames"],
        "presence_bytes": counts["bytes"],
        "frames_per_client": counts["frames"] / args.presence,
        "frames_if_one_per_join": args.presence * (args.presence + 1) / 2,
        "final_count_seen_by_most": sorted(final_counts)[len(final_counts) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--topics", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--presence", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--realtime", default="{}", help="JSON: REALTIME settings to add")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a Redis Cluster of 3 masters and 3 replicas (sharded pub/sub) instead of one Redis",
    )
    args = parser.parse_args()
    from realtime.embedded import EmbeddedRedis, free_port, wait_for_port
    from realtime.embedded_cluster import EmbeddedCluster

    with tempfile.TemporaryDirectory(prefix="realtime-topics-") as tmp:
        workdir = Path(tmp)
        made = EmbeddedCluster if args.cluster else EmbeddedRedis
        with made(directory=workdir / "redis") as redis_server:
            env = dict(
                os.environ,
                DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
                REDIS_URL=redis_server.url,
                REDIS_PREFIX="bench",
                DEBUG="0",
                SECRET_KEY="bench-" + os.urandom(24).hex(),
                LOG_LEVEL="WARNING",
                DJANGO_SETTINGS_MODULE="project.settings",
                REALTIME=json.dumps(
                    {"MAX_CONNECTIONS_PER_ADDRESS": 0, **json.loads(args.realtime)}
                ),
            )
            code = args.code.resolve()
            subprocess.run(
                [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=code, env=env, check=True
            )
            subprocess.run(
                [PY, "manage.py", "seeddemo"],
                cwd=code,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            lines = []
            if args.topics:
                lines.append(many_topics(args, env, workdir, code))
                print(json.dumps(lines[-1]), flush=True)
            if args.presence:
                port = free_port()
                server = spawn(
                    [PY, "-m", "realtime.server", "--port", str(port)],
                    env,
                    workdir / "presence.log",
                    code,
                )
                try:
                    wait_for_port(port, timeout=60)
                    lines.append(asyncio.run(crowd_presence(args, f"ws://127.0.0.1:{port}/ws/")))
                    print(json.dumps(lines[-1]), flush=True)
                finally:
                    server.terminate()
                    server.wait(30)
    if args.out:
        with open(args.out, "a") as out:
            for line in lines:
                out.write(
                    json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **line})
                    + "\n"
                )


if __name__ == "__main__":
    main()
