"""The figures docs/SCALING.md builds on that the fan-out benchmark does not give:

- publishes/s the database takes: ``realtime.publish()`` back to back (one transaction each,
  after-commit fan-out to Redis included) from 1 and 4 processes, on SQLite and on
  PostgreSQL (``--postgres URL`` of a database it may create tables in);
- Redis pub/sub: PUBLISH/s with ``redis-benchmark`` (pipelined and not), and the messages/s a
  single subscriber connection can read.

    .venv/bin/python bench/capacity.py --postgres postgres://postgres@127.0.0.1:5432/postgres

Writes bench/capacity.json and prints a summary; it starts its own embedded Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

from realtime.embedded import EmbeddedRedis, redis_server_binary  # noqa: E402

PUBLISHER = """
import os, sys, time
import django
django.setup()
from realtime import publish
n = int(sys.argv[1])
started = time.perf_counter()
for i in range(n):
    publish("cap", {"i": i, "text": "a message of a realistic size, about a hundred bytes"})
print(n / (time.perf_counter() - started))
"""


def publish_rate(env: dict, processes: int, each: int) -> float:
    """Messages/s stored (and fanned out) by ``processes`` publishers to one topic."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [PY, "-c", PUBLISHER, str(each)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError("publisher failed")
    return processes * each / (time.perf_counter() - started)


def database_figures(name: str, database_url: str, redis_url: str) -> dict:
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DEBUG="0",
        SECRET_KEY="capacity-" + uuid.uuid4().hex,
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="project.settings",
    )
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [PY, "manage.py", "topics", "add", "cap", "--backlog", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    one = publish_rate(env, 1, 2000)
    four = publish_rate(env, 4, 1000)
    print(f"  {name}: {one:.0f} publishes/s from 1 process, {four:.0f}/s from 4", flush=True)
    return {"database": name, "one_process_per_s": one, "four_processes_per_s": four}


def redis_benchmark(port: int, *extra: str) -> float:
    binary = shutil.which("redis-benchmark") or str(
        Path(redis_server_binary()).with_name("redis-benchmark")
    )
    out = subprocess.run(
        [binary, "-p", str(port), "-q", "-n", "200000", *extra, "PUBLISH", "ch", "x" * 200],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def subscriber_rate(redis_url: str, messages: int = 200_000) -> float:
    """Messages/s one redis-py asyncio subscriber (as a hub reads) takes from one PSUBSCRIBE."""
    code = f"""
import asyncio, time, redis.asyncio as r
async def main():
    sub = r.Redis.from_url({redis_url!r}); pub = r.Redis.from_url({redis_url!r})
    ps = sub.pubsub(); await ps.psubscribe("cap:*")
    await ps.get_message(timeout=1)
    async def produce():
        pipe = pub.pipeline(transaction=False)
        for i in range({messages}):
            pipe.publish("cap:t", b"1 " + b"x" * 200)
            if i % 1000 == 999:
                await pipe.execute(); pipe = pub.pipeline(transaction=False)
        await pipe.execute()
    task = asyncio.create_task(produce())
    got, started = 0, None
    while got < {messages}:
        m = await ps.get_message(timeout=5)
        if m is None: break
        if m["type"] == "pmessage":
            started = started or time.perf_counter(); got += 1
    print(got / (time.perf_counter() - started)); await task
asyncio.run(main())
"""
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="a PostgreSQL URL (a fresh database is created)")
    args = parser.parse_args()
    results: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    results["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="realtime-capacity-") as tmp:
        with EmbeddedRedis(directory=Path(tmp) / "redis") as redis:
            print("== Redis pub/sub", flush=True)
            results["redis_publish_per_s"] = redis_benchmark(redis.port)
            results["redis_publish_pipelined_per_s"] = redis_benchmark(redis.port, "-P", "16")
            results["redis_one_subscriber_per_s"] = subscriber_rate(redis.url)
            print(
                f"  PUBLISH {results['redis_publish_per_s']:.0f}/s, pipelined "
                f"{results['redis_publish_pipelined_per_s']:.0f}/s; one subscriber reads "
                f"{results['redis_one_subscriber_per_s']:.0f} msgs/s",
                flush=True,
            )
            print("== publishes/s the database takes", flush=True)
            rows = [database_figures("sqlite", f"sqlite:///{Path(tmp) / 'cap.sqlite3'}", redis.url)]
            if args.postgres:
                import psycopg

                name = f"realtime_capacity_{uuid.uuid4().hex[:8]}"
                admin = psycopg.connect(args.postgres, autocommit=True)
                admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    url = args.postgres.rsplit("/", 1)[0] + "/" + name
                    rows.append(database_figures("postgresql", url, redis.url))
                finally:
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                    admin.close()
            results["publish"] = rows
    (BENCH / "capacity.json").write_text(json.dumps(results, indent=1))
    print("wrote bench/capacity.json")


if __name__ == "__main__":
    main()
