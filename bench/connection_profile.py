"""Where one idle subscribed connection's memory and one handshake's time go, in the product.

Starts the product's daphne in this process (``realtime.server.daphne_command``'s flags) with
tracemalloc on, opens ``--clients`` connections with the Python load generator (each
subscribed to one topic), and prints what the connections hold: the allocation sites
grouped by file and by line (bytes per connection), and the live objects by type (count per
connection). With ``--profile`` it prints instead a cProfile of the handshakes (cumulative
time per connection by function), for the time goal.

    python bench/connection_profile.py [--clients 2000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))


def loadgen(port: int, clients: int, topic: str) -> subprocess.Popen:
    args = [PY, str(BENCH / "loadgen.py"), "--url", f"ws://127.0.0.1:{port}/ws/"]
    args += ["--clients", str(clients), "--count", "1", "--topic", topic, "--hold"]
    return subprocess.Popen(
        ["bash", "-c", "ulimit -n $(ulimit -Hn); exec " + shlex.join(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def report_memory(before, after, clients: int, types_before: Counter) -> None:
    import tracemalloc

    print(f"\n== memory per connection ({clients} connections)")
    for key, title in (("filename", "by file"), ("lineno", "by line")):
        stats = after.compare_to(before, key)
        total = sum(s.size_diff for s in stats)
        print(f"-- {title}: {total / clients:.0f} B per connection in all")
        for s in stats[:25]:
            if s.size_diff <= 0:
                continue
            frame = s.traceback[0]
            where = frame.filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
            line = f":{frame.lineno}" if key == "lineno" else ""
            print(
                f"{s.size_diff / clients:8.0f} B {s.count_diff / clients:6.1f} blocks"
                f"  {where}{line}"
            )
    from twisted.internet import reactor

    tasks = Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks(reactor._asyncioEventloop))
    print("-- asyncio tasks by coroutine (per connection)")
    for name, count in tasks.most_common(8):
        print(f"{count / clients:8.2f}  {name}")
    coroutines = Counter(
        o.__qualname__ for o in gc.get_objects() if type(o).__name__ == "coroutine"
    )
    print("-- suspended coroutines (per connection)")
    for name, count in coroutines.most_common(20):
        print(f"{count / clients:8.2f}  {name}")
    types_after = Counter(type(o).__qualname__ for o in gc.get_objects())
    print("-- gc-tracked objects by type (per connection)")
    for name, count in (types_after - types_before).most_common(30):
        print(f"{count / clients:8.2f}  {name}")
    tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="time, not memory")
    parser.add_argument("--gc", action="store_true", help="the collector's work while opening")
    parser.add_argument("--threshold", help="gc thresholds to run with, e.g. 7000,10,10")
    args = parser.parse_args()
    if args.threshold:
        os.environ["REALTIME_BENCH_GC_THRESHOLD"] = args.threshold
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="connection-profile-"))
    from realtime.embedded import EmbeddedRedis, free_port, wait_for_port

    redis = EmbeddedRedis(directory=workdir / "redis").start()
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        REDIS_URL=redis.url,
        DEBUG="0",
        SECRET_KEY="bench-" + os.urandom(24).hex(),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="project.settings",
    )
    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
    subprocess.run(
        [*manage, "topics", "add", "profiled", "--backlog", "0"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    from realtime.server import daphne_command

    command = daphne_command("127.0.0.1", port)
    daphne_args = command[command.index("daphne") + 1 :]

    def drive() -> None:
        wait_for_port(port, timeout=60)
        time.sleep(1.0)
        if args.gc:
            timing = {0: [0, 0.0, 0], 1: [0, 0.0, 0], 2: [0, 0.0, 0]}
            started = [0.0]

            def watch(phase: str, info: dict) -> None:
                if phase == "start":
                    started[0] = time.perf_counter()
                else:
                    row = timing[info["generation"]]
                    row[0] += 1
                    row[1] += time.perf_counter() - started[0]
                    row[2] += info["collected"]

            if args.threshold:
                gc.set_threshold(*(int(x) for x in args.threshold.split(",")))
            gc.callbacks.append(watch)
            begun = time.perf_counter()
            gen = loadgen(port, args.clients, "profiled")
            ready = json.loads(gen.stdout.readline())
            gc.callbacks.remove(watch)
            wall = time.perf_counter() - begun
            print(f"\n== {args.clients} connections in {wall:.2f} s: {ready}")
            print(f"   thresholds {gc.get_threshold()}, objects tracked {len(gc.get_objects())}")
            for generation, (count, seconds, collected) in timing.items():
                print(
                    f"   generation {generation}: {count} collections, {seconds:.3f} s,"
                    f" {collected} objects collected"
                )
        elif args.profile:
            import cProfile
            import pstats

            from twisted.internet import reactor

            profiler = cProfile.Profile()
            reactor.callFromThread(profiler.enable)  # the server's thread, not this one
            gen = loadgen(port, args.clients, "profiled")
            ready = json.loads(gen.stdout.readline())
            switched = threading.Event()
            reactor.callFromThread(lambda: (profiler.disable(), switched.set()))
            switched.wait(10)
            print(f"\n== {args.clients} handshakes: {ready}")
            stats = pstats.Stats(profiler)
            stats.dump_stats(workdir / "handshakes.prof")
            print(f"profile: {workdir / 'handshakes.prof'}")
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
        else:
            import tracemalloc

            gc.collect()
            types_before = Counter(type(o).__qualname__ for o in gc.get_objects())
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            gen = loadgen(port, args.clients, "profiled")
            ready = json.loads(gen.stdout.readline())
            time.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            print(f"\n== {args.clients} connections: {ready}")
            report_memory(before, after, args.clients, types_before)
        gen.stdin.write("done\n")
        gen.stdin.flush()
        gen.wait(60)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=drive, daemon=True).start()
    from daphne.cli import CommandLineInterface

    try:
        CommandLineInterface().run(daphne_args)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
