"""How long ``realtime.publish()`` keeps a message before Redis gets it: the time from the
call to its ``PUBLISH`` being written (the part of a delivery's latency the raw broadcast does
not spend: storing and rendering first), and the whole call.

Paced publishes (one every ``--gap`` seconds, as a site publishes: each one finds the CPU's
caches cold) and back-to-back ones, on a fresh SQLite database and an embedded Redis, in
alternating rounds for the working tree and ``--baseline PATH`` (a worktree of an earlier
commit, run with its own code). Prints medians and p90 in microseconds; writes nothing.

    python bench/publish_wait.py [--baseline PATH] [--rounds 4] [--count 200] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable


def child(root: Path, count: int, gap: float) -> dict:
    """In a process of its own: ``root``'s code, a fresh database; the timings."""
    import time

    sys.path.insert(0, str(root))
    os.chdir(root)
    import django

    django.setup()
    from django.core.management import call_command

    from realtime import cluster, publish

    call_command("migrate", verbosity=0)
    call_command("topics", "add", "bench", "--backlog", "0", stdout=open(os.devnull, "w"))  # noqa: SIM115
    written = [0]
    real = cluster.topic_publish

    def stamped(*args, **kwargs):  # the moment the PUBLISH command is handed to the socket
        written[0] = time.perf_counter_ns()
        return real(*args, **kwargs)

    cluster.topic_publish = stamped

    def run(pause: float, n: int) -> dict:
        until, whole = [], []
        for i in range(n):
            if pause:
                time.sleep(pause)
            start = time.perf_counter_ns()
            publish("bench", {"t": time.time_ns(), "i": i}, source="api")
            end = time.perf_counter_ns()
            until.append((written[0] - start) / 1000)
            whole.append((end - start) / 1000)
        until.sort(), whole.sort()
        return {
            "until_publish_p50": until[n // 2],
            "until_publish_p90": until[n * 9 // 10],
            "call_p50": whole[n // 2],
        }

    run(0, 50)  # warm: imports, statements made, connections open
    return {"paced": run(gap, count), "back_to_back": run(0, count)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a worktree of an earlier commit")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between paced publishes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.count, args.gap)))
        return
    sys.path.insert(0, str(BENCH))
    from run import EmbeddedRedis, last_json

    roots = {"after": ROOT}
    if args.baseline:
        roots = {"before": Path(args.baseline).resolve(), **roots}
    results: dict[str, list[dict]] = {name: [] for name in roots}
    with tempfile.TemporaryDirectory(prefix="realtime-publish-wait-") as tmp:
        with EmbeddedRedis(directory=Path(tmp) / "redis") as redis:
            for round_ in range(args.rounds):
                order = list(roots) if round_ % 2 == 0 else list(roots)[::-1]
                for name in order:
                    database = Path(tmp) / f"{name}-{round_}.sqlite3"
                    env = dict(
                        os.environ,
                        DJANGO_SETTINGS_MODULE="project.settings",
                        DATABASE_URL=f"sqlite:///{database}",
                        REDIS_URL=redis.url,
                        DEBUG="0",
                        SECRET_KEY="bench-" + os.urandom(24).hex(),
                        LOG_LEVEL="WARNING",
                    )
                    found = last_json(
                        [PY, __file__, "--child", str(roots[name]), "--count", str(args.count)]
                        + ["--gap", str(args.gap)],
                        env,
                    )
                    results[name].append(found)
                    paced = found["paced"]
                    print(
                        f"  round {round_ + 1} {name:6} paced: until PUBLISH "
                        f"{paced['until_publish_p50']:.0f} us (p90 "
                        f"{paced['until_publish_p90']:.0f}), call {paced['call_p50']:.0f} us; "
                        f"back to back: until PUBLISH "
                        f"{found['back_to_back']['until_publish_p50']:.0f} us",
                        flush=True,
                    )
    for name, runs in results.items():
        paced = statistics.mean(r["paced"]["until_publish_p50"] for r in runs)
        hot = statistics.mean(r["back_to_back"]["until_publish_p50"] for r in runs)
        print(
            f"{name:6} until PUBLISH, mean of the rounds' medians: paced {paced:.0f} us, "
            f"back to back {hot:.0f} us"
        )


if __name__ == "__main__":
    main()
