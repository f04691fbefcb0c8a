"""What losing a Redis master or a whole host costs, in seconds, measured from outside.

- cluster: a Redis Cluster of 3 masters and 3 replicas, ``--workers 2`` and the scheduler on
  it, 200 clients subscribed to three topics (one per master), 20 msgs/s; the master of one
  topic is SIGKILLed. Figures: the time from the kill until every client has every message
  published so far (caught up), and the latency of the messages published during the outage.
- hosts: two hosts (127.0.0.2, 127.0.0.3: a supervisor with two workers and a scheduler each)
  behind the repository's nginx, PostgreSQL (TEST_POSTGRES_URL), one Redis; 200 clients; one
  host's processes all SIGKILLed. Figures: the time until every client of that host is
  connected again (through nginx, to the other) and until every client has caught up.

    python bench/failover.py [--part cluster|hosts|both] [--out bench/failover.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from tests.helpers.client import ResumingClient  # noqa: E402

FAST = {"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.3, "SCHEDULER_LOCK_TTL": 2.0}
CLIENTS = 200
HOST_CLIENTS = 90


async def caught_up(clients: list[ResumingClient], heads: dict[str, int], limit: float) -> float:
    """Seconds until every client has ``heads`` (topic → seq)."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        for c in clients:
            for topic, seq in heads.items():
                await c.wait_for(topic, seq, timeout=limit)
    return time.monotonic() - started


def published(proc) -> list[tuple[float, str, int]]:
    """(time, topic, seq) of every publish the publisher printed."""
    rows = []
    for line in proc.output().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            rows.append((float(parts[0]), parts[1], int(parts[2])))
    return rows


PUBLISHER = (
    "import sys, time; from realtime import publish\n"
    "topics = {topics!r}\n"
    "for i in range({count}):\n"
    "    m = publish(topics[i % len(topics)], {{'i': i, 't': time.time()}})\n"
    "    print(time.time(), m.topic.slug, m.seq, flush=True)\n"
    "    time.sleep({pause})\n"
)


async def cluster_part(tmp: Path) -> dict:
    from realtime.embedded_cluster import EmbeddedCluster
    from tests.helpers.processes import PYTHON, Proc, Site
    from tests.test_cluster import MAKE_TOPICS, masters_by_slot, topics_on_every_master

    with EmbeddedCluster(directory=tmp / "cluster") as redis_cluster:
        site = Site(tmp / "site", redis_cluster.url, workers=2, REALTIME=json.dumps(FAST))
        site.tmp_path.mkdir(parents=True)
        site.start()
        try:
            slots = masters_by_slot(redis_cluster.url)
            chosen = topics_on_every_master(site.prefix, slots)
            topics = sorted(chosen.values())
            victim_node, victim = next(iter(chosen.items()))
            site.shell(MAKE_TOPICS.format(slugs=topics))
            url = f"ws://127.0.0.1:{site.port}/ws/"
            clients = [ResumingClient(url, topics).start() for _ in range(CLIENTS)]
            for c in clients:
                await asyncio.wait_for(c.subscribed.wait(), 60)
            code = PUBLISHER.format(topics=topics, count=400, pause=0.05)
            pub = Proc([PYTHON, "manage.py", "shell", "-c", code], site.env, tmp / "pub.log")
            await asyncio.sleep(5)
            killed = time.time()
            redis_cluster.kill(victim_node[1])
            await asyncio.to_thread(pub.popen.wait, 120)
            rows = published(pub)
            heads: dict[str, int] = {}
            for _, topic, seq in rows:
                heads[topic] = max(heads.get(topic, 0), seq)
            await caught_up(clients, heads, 120)
            # When every client had the first message of the victim topic published after
            # the kill (what the failover cost), and the latency of the outage's messages.
            after = [(t, seq) for t, topic, seq in rows if topic == victim and t >= killed]
            first_t, first_seq = after[0]
            arrivals = []
            for c in clients:
                arrivals.append(c.arrival[victim][first_seq])
            outage = [
                max(c.arrival[victim][seq] for c in clients) - t
                for t, seq in after
                if max(c.arrival[victim][seq] for c in clients) - t > 0.2
            ]
            result = {
                "part": "cluster-failover",
                "clients": CLIENTS,
                "rate_per_s": 20,
                "caught_up_after_kill_s": round(max(arrivals) - killed, 2),
                "outage_messages": len(outage),
                "outage_latency_max_s": round(max(outage or [0]), 2),
                "lost": sum(
                    len(set(range(1, heads[t] + 1)) - set(c.received[t]))
                    for c in clients
                    for t in topics
                ),
                "duplicates": sum(
                    len(c.raw[t]) - len(set(c.raw[t])) for c in clients for t in topics
                ),
            }
            for c in clients:
                await c.stop()
            return result
        finally:
            site.stop()


async def hosts_part(tmp: Path) -> dict:
    import psycopg

    from realtime.embedded import EmbeddedRedis
    from tests.test_two_hosts import two_host_site

    admin_url = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"failover_{os.getpid()}"
    admin = psycopg.connect(admin_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    redis = EmbeddedRedis(directory=tmp / "redis").start()
    database = admin_url.rsplit("/", 1)[0] + "/" + name
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with two_host_site(database, redis.url, tmp, "failover") as (hosts, base, env):
            return await _host_killed(hosts, base, env, tmp)
    finally:
        redis.stop()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


async def _host_killed(hosts: list, base: str, env: dict, tmp: Path) -> dict:
    from tests.helpers.processes import PYTHON, Proc
    from tests.test_two_hosts import connections_by_pid

    ws_url = base.replace("http://", "ws://") + "/ws/"
    # deploy/nginx allows 100 sockets per client address (limit_conn): stay under it.
    clients = [ResumingClient(ws_url, ["chat"], origin=base).start() for _ in range(HOST_CLIENTS)]
    for c in clients:
        await asyncio.wait_for(c.subscribed.wait(), 60)
    await asyncio.sleep(3)  # hubs report their connections every 2 s
    counts = connections_by_pid(env)
    on_victim = sum(n for pid, n in counts.items() if pid in hosts[0].pids())
    before = {id(c): c.connects for c in clients}
    code = PUBLISHER.format(topics=["chat"], count=200, pause=0.05)
    pub = Proc([PYTHON, "manage.py", "shell", "-c", code], env, tmp / "pub.log")
    await asyncio.sleep(3)
    killed = time.monotonic()
    hosts[0].kill()
    async with asyncio.timeout(60):
        while True:
            moved = [c for c in clients if c.connects > before[id(c)]]
            if len(moved) >= on_victim and all(c.ws is not None for c in moved):
                break
            await asyncio.sleep(0.01)
    reconnected = time.monotonic() - killed
    await asyncio.to_thread(pub.popen.wait, 120)
    head = max(seq for _, _, seq in published(pub))
    caught = await caught_up(clients, {"chat": head}, 60)
    result = {
        "part": "host-killed",
        "clients": HOST_CLIENTS,
        "clients_on_killed_host": on_victim,
        "all_reconnected_s": round(reconnected, 2),
        "caught_up_after_publishing_s": round(caught, 2),
        "lost": sum(len(set(range(1, head + 1)) - set(c.received["chat"])) for c in clients),
    }
    for c in clients:
        await c.stop()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("cluster", "hosts", "both"), default="both")
    parser.add_argument("--out", default=str(BENCH / "failover.json"))
    args = parser.parse_args()
    out = Path(args.out)
    results = {r["part"]: r for r in json.loads(out.read_text())} if out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        parts = [("cluster", cluster_part), ("hosts", hosts_part)]
        for name, part in parts:
            if args.part in (name, "both"):
                found = await part(Path(tmp) / name)
                stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                results[found["part"]] = {"date": stamp, **found}
                print(json.dumps(found), flush=True)
                out.write_text(json.dumps(list(results.values()), indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
