"""The benchmark: the product's fan-out against two baselines, in one run.

    .venv/bin/python bench/run.py            # full run, writes bench/RESULTS.md and bench/*.png
    .venv/bin/python bench/run.py --quick    # a smaller run (fewer sizes and rates)

It starts its own embedded Redis, a fresh SQLite database and the servers:
- product:  daphne serving project.asgi (realtime.publish → Redis → engine hub → sockets);
- tutorial: daphne serving bench/tutorial_asgi.py (group_add / group_send / handler send);
- raw:      bench/raw_server.py (websockets.broadcast from one Redis subscription);
then drives them with bench/loadgen.py (clients) and bench/publisher.py (messages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from realtime.embedded import EmbeddedRedis, free_port, wait_for_port  # noqa: E402

PY = sys.executable
SERVERS = ("product", "tutorial", "raw")
TUTORIAL_RATES = [1, 2, 3, 4, 6]
COMPARE_RATES = (20, 40, 60, 80, 100, 120, 140, 160, 200)
VARIANTS = {
    "product-autobahn": {"WRITE_PATH": "autobahn"},  # autobahn's public prepared messages
    "product-gc": {"GC_TUNING": False},  # Python's own garbage-collector settings
}


NODE_LOADGEN = BENCH / "node" / "loadgen.mjs"


def ensure_node_loadgen() -> None:
    """Install the Node load generator's one dependency (ws, pinned in its package.json)."""
    if not (BENCH / "node" / "node_modules" / "ws").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BENCH / "node", check=True
        )


class Bench:
    def __init__(self, workdir: Path, redis_url: str, quick: bool, loadgen: str = "python"):
        self.workdir = workdir
        self.quick = quick
        self.loadgen_kind = loadgen
        self.sse = False  # the Python load generator on Server-Sent Events
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
            REDIS_URL=redis_url,
            # Production settings: DEBUG off (no query log), a real key.
            DEBUG="0",
            SECRET_KEY="bench-" + os.urandom(24).hex(),
            LOG_LEVEL="WARNING",
            DJANGO_SETTINGS_MODULE="project.settings",
            # The channels_redis default capacity, as in the tutorial.
            CHANNEL_LAYER_CAPACITY="100",
            REALTIME=json.dumps({"CONSUMER_CHANNEL_LAYER": False}),
        )
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.topic_counter = 0

    # --- processes

    def spawn(
        self, name: str, command: list[str], cwd: Path = ROOT, env: dict | None = None
    ) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        line = "ulimit -n $(ulimit -Hn); exec " + shlex.join(command)
        proc = subprocess.Popen(
            ["bash", "-c", line], cwd=cwd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def start_servers(self, baseline: Path | None = None) -> None:
        subprocess.run(
            [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True
        )
        from realtime.server import daphne_command

        # The product runs exactly as scripts/run runs it (access log off).
        specs = {
            "product": (daphne_command("127.0.0.1", "{port}"), ROOT),
            "product2": (daphne_command("127.0.0.1", "{port}"), ROOT),
            "tutorial": (
                daphne_command("127.0.0.1", "{port}", application="tutorial_asgi:application"),
                BENCH,
            ),
            "raw": ([PY, "raw_server.py", "--port", "{port}"], BENCH),
        }
        # The same product with other settings (VARIANTS), for side-by-side comparisons.
        for name in VARIANTS:
            specs[name] = (daphne_command("127.0.0.1", "{port}"), ROOT)
        if baseline is not None:  # the previous release's code, same database and Redis
            specs["product-before"] = (daphne_command("127.0.0.1", "{port}"), baseline)
        self.specs = specs
        for name in specs:
            self.start_one(name)

    def start_one(self, name: str) -> None:
        """Start server ``name`` of ``start_servers`` (again) on a free port."""
        command, cwd = self.specs[name]
        port = free_port()
        env = None
        if name in VARIANTS:
            realtime = {**json.loads(self.env["REALTIME"]), **VARIANTS[name]}
            env = {**self.env, "REALTIME": json.dumps(realtime)}
        command = [c.replace("{port}", str(port)) for c in command]
        proc = self.spawn(name, command, cwd, env)
        wait_for_port(port, timeout=60)
        self.ports[name], self.pids[name] = port, proc.pid

    def restart(self, name: str) -> None:
        self.stop_one(name)
        self.start_one(name)

    def start_workers(self, name: str, workers: int) -> None:
        """``python -m realtime.server --workers N`` on a free port, as ``name``."""
        port = free_port()
        command = [PY, "-m", "realtime.server", "--port", str(port), "--workers", str(workers)]
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"prometheus-{name}")}
        proc = self.spawn(name, command, ROOT, env)
        wait_for_port(port, timeout=60)
        deadline = time.monotonic() + 60
        while len(psutil.Process(proc.pid).children()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {workers} workers did not start")
            time.sleep(0.1)
        self.ports[name], self.pids[name] = port, proc.pid

    def stop_one(self, name: str) -> None:
        proc = next(p for p in self.procs if p.pid == self.pids[name])
        proc.terminate()
        proc.wait(30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def rss(self, name: str) -> int:
        return psutil.Process(self.pids[name]).memory_info().rss

    def new_topic(self) -> str:
        self.topic_counter += 1
        slug = f"bench-{self.topic_counter}"
        subprocess.run(
            [PY, "manage.py", "topics", "add", slug, "--backlog", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return slug

    # --- one scenario

    def loadgen(
        self, clients: int, count: int, urls: list[str], topic: str | None, *extra: str
    ) -> tuple[subprocess.Popen, dict]:
        """Start the load generator; return it once its clients are ready, with its report."""
        program = (
            ["node", str(NODE_LOADGEN)]
            if self.loadgen_kind == "node"
            else [PY, str(BENCH / "loadgen.py")]
        )
        args = [*program, "--clients", str(clients), "--count", str(count)]
        for url in urls:
            args += ["--url", url]
        if topic is not None:
            args += ["--topic", topic]
        if self.sse:
            args.append("--sse")
        gen = subprocess.Popen(
            ["bash", "-c", "ulimit -n $(ulimit -Hn); exec " + shlex.join([*args, *extra])],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return gen, json.loads(gen.stdout.readline())

    def urls(self, servers: list[str]) -> list[str]:
        return [f"ws://127.0.0.1:{self.ports[s]}/ws/" for s in servers]

    def scenario(
        self,
        server: str,
        clients: int,
        rate: float,
        seconds: float,
        servers: list[str] | None = None,
    ) -> dict:
        """N clients on ``server`` (or several product processes), ``rate`` msgs/s."""
        count = max(1, int(rate * seconds))
        mode = "product" if server.startswith("product") else server
        topic = self.new_topic() if mode == "product" else "bench"
        gen, ready = self.loadgen(
            clients,
            count,
            self.urls(servers or [server]),
            topic if mode == "product" else None,
            "--drain",
            "5",
        )
        # The release before publishes with its own code too (its store and fan-out path).
        code = self.specs[server][1] if server == "product-before" else ROOT
        started = time.monotonic()
        published = subprocess.run(
            [
                PY,
                str(code / "bench" / "publisher.py"),
                "--mode",
                mode,
                "--topic",
                topic,
                "--count",
                str(count),
                "--rate",
                str(rate),
            ],
            env=self.env,
            check=True,
            cwd=code,
            stdout=subprocess.PIPE,
            text=True,
        )
        sent_seconds = time.monotonic() - started
        gen.stdin.write("published\n")
        gen.stdin.flush()
        result = json.loads(gen.stdout.readline())
        gen.wait(30)
        span = (result["last_arrival"] or 0) - (result["first_arrival"] or 0)
        result.update(
            server=server,
            rate=rate,
            offered_per_s=rate * clients,
            sent_seconds=sent_seconds,
            delivered_per_s=result["received"] / span if span > 0 else 0.0,
            open_seconds=ready["open_seconds"],
        )
        for line in published.stdout.splitlines():  # the product's publisher: its wait
            if line.startswith("{"):
                result.update(json.loads(line))
        # Sustained: it keeps up with the offered rate (no growing queue) with p99 ≤ 500 ms
        # and (almost) everything arrives.
        result["sustained"] = (
            result["received"] >= 0.999 * result["expected"]
            and result["delivered_per_s"] >= 0.95 * result["offered_per_s"]
            and result["p99_ms"] <= 500
        )
        print(
            f"  {server:9} N={clients:5} rate={rate:6g}/s "
            f"delivered={result['delivered_per_s']:9.0f}/s p50={result['p50_ms']:7.1f} "
            f"p99={result['p99_ms']:8.1f} max={result['max_ms']:8.1f} ms "
            f"lost={result['lost']} dup={result['duplicates']}"
            + (
                f" publish-wait={result['publish_wait_p50_us'] / 1000:.2f}ms"
                if "publish_wait_p50_us" in result
                else ""
            ),
            flush=True,
        )
        return result

    def memory(self, server: str, clients: int) -> dict:
        """Open ``clients`` idle subscribed connections; time it and measure server memory."""
        mode = "product" if server.startswith("product") else server
        before = self.rss(server)
        topic = self.new_topic() if mode == "product" else None
        gen, ready = self.loadgen(clients, 1, self.urls([server]), topic, "--hold")
        time.sleep(1.0)  # let the server settle before reading its RSS
        after = self.rss(server)
        gen.stdin.write("done\n")
        gen.stdin.flush()
        gen.wait(60)
        result = {
            "server": server,
            "clients": clients,
            "open_seconds": ready["open_seconds"],
            "subscribe_seconds": ready.get("subscribe_seconds", 0.0),
            "rss_before_mb": before / 2**20,
            "rss_after_mb": after / 2**20,
            "kb_per_connection": (after - before) / clients / 1024,
        }
        print(
            f"  {server:9} {clients} connections opened in {result['open_seconds']:.2f}s, "
            f"subscribed in {result['subscribe_seconds']:.2f}s, "
            f"{result['kb_per_connection']:.1f} KB each",
            flush=True,
        )
        return result


def last_json(command: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """Run a bench script; the JSON object its last line of output prints."""
    out = subprocess.run(
        command, cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def scheduler_bench(env: dict) -> dict:
    result = last_json([PY, str(BENCH / "scheduler_bench.py"), "--feeds", "1000"], env)
    print(
        f"  scheduler: {result['feeds']} feeds, tick {result['tick_seconds']:.3f}s, "
        f"published {result['published']}",
        flush=True,
    )
    return result


def max_sustained(bench: Bench, server: str, rates: list[int]) -> dict:
    """Raise the rate until the server no longer sustains it; the last sustained run."""
    best: dict = {}
    for rate in rates:
        r = bench.scenario(server, 1000, rate, 4)
        if not r["sustained"]:
            break
        best = r
    return best


def workers_phase(bench: Bench) -> list[dict]:
    """1, 2 and 4 workers on one port: max sustained deliveries/s with 1,000 subscribers and
    the time to open 5,000 connections."""
    rows = []
    for workers in (1, 2, 4):
        name = f"product-{workers}w"
        bench.start_workers(name, workers)
        try:
            opened = bench.memory(name, 5000)["open_seconds"]
            best = max_sustained(bench, name, [20, 40, 60, 80, 100, 120, 140, 160, 200, 250])
        finally:
            bench.stop_one(name)
        delivered = best.get("delivered_per_s", 0.0)
        rows.append(
            {
                "workers": workers,
                "max_sustained_per_s": delivered,
                "per_worker_per_s": delivered / workers,
                "rate": best.get("rate"),
                "p50_ms": best.get("p50_ms"),
                "p99_ms": best.get("p99_ms"),
                "open_5000_seconds": opened,
            }
        )
        print(f"  {workers} worker(s): {rows[-1]}", flush=True)
    return rows


def sse_phase(bench: Bench) -> list[dict]:
    """1,000 Server-Sent Events subscribers at 20 and 40 msgs/s, next to the same on
    WebSockets, in one run."""
    rows = []
    for transport in ("websocket", "sse"):
        bench.sse = transport == "sse"
        for rate in (20, 40):
            r = bench.scenario("product", 1000, rate, 5)
            rows.append({**r, "transport": transport})
    bench.sse = False
    return rows


STEADY_RUNS = 10


def swept(bench: Bench, topic: str) -> int:
    """Messages of ``topic`` that the after-commit fan-out did not send (the outbox sweep
    did, at least half a second after they were stored)."""
    code = (
        "from datetime import timedelta; from django.db.models import F\n"
        "from realtime.models import Message\n"
        f"print(Message.objects.filter(topic__slug={topic!r}, "
        "fanned_out_at__gt=F('created_at') + timedelta(seconds=0.5)).count())"
    )
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=bench.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def steady_phase(bench: Bench, loadgen: str = "node") -> list[dict]:
    """Issue 19's steadiness: ``STEADY_RUNS`` consecutive pairs (product, then the raw
    broadcast paced the same way) of 1,000 clients, 300 messages at 100 msgs/s, from the
    Node.js load generator (``steady-python``: the Python one); with, for the product, how
    many messages the sweep had to send."""
    rows = []
    bench.loadgen_kind = loadgen
    for run in range(1, STEADY_RUNS + 1):
        pair = {}
        for server in ("product", "raw"):
            r = bench.scenario(server, 1000, 100, 3)
            if server == "product":
                r["swept"] = swept(bench, f"bench-{bench.topic_counter}")
            pair[server] = r
            rows.append({**r, "run": run, "loadgen": loadgen})
        ratio = pair["product"]["delivered_per_s"] / max(1.0, pair["raw"]["delivered_per_s"])
        rows[-2]["ratio_to_raw"] = ratio
        print(f"  run {run}: product/raw {ratio:.2f}, swept {pair['product']['swept']}", flush=True)
    bench.loadgen_kind = "python"
    return rows


REPEATS = 4  # each before/after pair, alternating: single runs here vary by ±10 %


def before_after_phase(bench: Bench) -> list[dict]:
    """The product as it was (``--baseline``, a checkout of the previous commit) and as it is,
    in one run, alternating: 1,000 clients at 20 and 100 msgs/s from both load generators,
    and 1,000 Server-Sent Events clients at 20 msgs/s; each pair ``REPEATS`` times."""
    rows = []
    for kind in ("python", "node"):
        bench.loadgen_kind = kind
        for rate in (20, 100):
            for repeat in range(1, REPEATS + 1):
                for server in ("product-before", "product"):
                    r = bench.scenario(server, 1000, rate, 5)
                    rows.append({**r, "loadgen": kind, "transport": "websocket", "repeat": repeat})
    bench.loadgen_kind = "python"
    bench.sse = True
    for repeat in range(1, REPEATS + 1):
        for server in ("product-before", "product"):
            r = bench.scenario(server, 1000, 20, 5)
            rows.append({**r, "loadgen": "python", "transport": "sse", "repeat": repeat})
    bench.sse = False
    return rows


def connections_phase(bench: Bench) -> list[dict]:
    """Issue 19's handshakes and memory: 5,000 connections opened (then subscribed) on a
    freshly started server, its RSS before and after, for the product (and the release before
    with ``--baseline``) and the raw broadcast, from both load generators, ``REPEATS`` times
    alternating, in turn forwards and backwards (a fixed order favoured the first server by
    about 10 % on 2026-11-28 night)."""
    rows = []
    servers = (["product-before"] if "product-before" in bench.ports else []) + ["product", "raw"]
    for repeat in range(1, REPEATS + 1):
        for kind in ("python", "node"):
            bench.loadgen_kind = kind
            for server in servers if repeat % 2 else servers[::-1]:
                bench.restart(server)
                time.sleep(1.0)  # settled before its RSS is read
                r = bench.memory(server, 5000)
                rows.append({**r, "loadgen": kind, "repeat": repeat})
    bench.loadgen_kind = "python"
    return rows


def harness_phase(bench: Bench) -> list[dict]:
    """The same scenarios from both load generators: product and raw at 20 and 100 msg/s to
    1,000 clients."""
    rows = []
    for kind in ("python", "node"):
        bench.loadgen_kind = kind
        for server in ("product", "raw"):
            for rate in (20, 100):
                r = bench.scenario(server, 1000, rate, 5)
                rows.append({**r, "loadgen": kind})
    bench.loadgen_kind = "python"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--phase",
        choices=(
            "all",
            "workers",
            "harnesses",
            "sse",
            "before-after",
            "drop",
            "steady",
            "steady-python",
            "connections",
        ),
        default="all",
        help="workers: 1, 2, 4 workers on one port; harnesses: the Python and the Node.js "
        "load generators side by side. Both update results.json and RESULTS.md in place. "
        "drop: bench/drop.py (clients cut at random, every server process restarted halfway; "
        "the product against the tutorial design and the raw broadcast), writing "
        "bench/drop.json and bench/drop.png. connections: 5,000 connections opened on fresh "
        "servers, memory per connection (product, raw, and product-before with --baseline).",
    )
    parser.add_argument(
        "--loadgen",
        choices=("python", "node"),
        default="python",
        help="the load generator of the main phases (bench/loadgen.py or bench/node)",
    )
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="with --phase before-after or connections: a checkout of the previous release "
        "(git worktree add PATH REV), served as product-before beside the product",
    )
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    parser.add_argument(
        "--compare",
        metavar="SERVER,...",
        help="only the throughput phase for these servers (e.g. product,product-gc); prints, "
        "writes nothing",
    )
    args = parser.parse_args()
    if args.phase == "drop":
        quick = ["--clients", "200", "--seconds", "20"] if args.quick else []
        sys.exit(subprocess.call([PY, str(BENCH / "drop.py"), *quick], cwd=ROOT))
    command = "python bench/run.py" + (" --quick" if args.quick else "")
    sizes = [100, 1000] if args.quick else [100, 500, 1000, 2000]
    rates = [20, 60, 100] if args.quick else list(COMPARE_RATES)
    results: dict = {"latency": [], "throughput": [], "two_processes": [], "memory": []}
    previous = BENCH / "results.json"
    if previous.exists():
        # Phases run on their own keep the others' figures (each records its own date).
        old = json.loads(previous.read_text())
        if args.phase == "all":
            results.update({k: old[k] for k in ("workers", "harnesses", "sse") if k in old})
        else:
            results = old
    if args.loadgen == "node" or args.phase in (
        "harnesses",
        "before-after",
        "steady",
        "connections",
    ):
        ensure_node_loadgen()
    with tempfile.TemporaryDirectory(prefix="realtime-bench-") as tmp:
        workdir = Path(tmp)
        with EmbeddedRedis(directory=workdir / "redis") as redis:
            bench = Bench(workdir, redis.url, args.quick, args.loadgen)
            try:
                if args.phase == "before-after" and not args.baseline:
                    parser.error("--phase before-after needs --baseline PATH")
                bench.start_servers(baseline=Path(args.baseline) if args.baseline else None)
                if args.phase != "all":
                    print(f"== phase: {args.phase}", flush=True)
                    phases = {
                        "workers": workers_phase,
                        "harnesses": harness_phase,
                        "sse": sse_phase,
                        "before-after": before_after_phase,
                        "steady": steady_phase,
                        "steady-python": lambda bench: steady_phase(bench, "python"),
                        "connections": connections_phase,
                    }
                    rows = phases[args.phase](bench)
                    results[args.phase] = {
                        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        "cpus": os.cpu_count(),
                        "rows": rows,
                        **({"baseline": _revision(Path(args.baseline))} if args.baseline else {}),
                    }
                    previous.write_text(json.dumps(results, indent=1))
                    from report import write_report

                    write_report(results, Path(args.out))
                    print(f"wrote {args.out}")
                    return
                if args.compare:
                    for server in args.compare.split(","):
                        for rate in COMPARE_RATES:
                            if not bench.scenario(server, 1000, rate, 4)["sustained"]:
                                break
                    return
                # First, on fresh server processes: memory readings of later phases would be
                # blurred by memory the processes freed and reuse.
                print("== opening connections; memory per idle subscribed connection", flush=True)
                for server in (*SERVERS, "product-gc"):  # GC tuning on and off, side by side
                    results["memory"].append(bench.memory(server, 5000))
                print("== latency at 20 messages/s, by number of subscribers", flush=True)
                for n in sizes:
                    for server in SERVERS:
                        results["latency"].append(bench.scenario(server, n, 20, 5))
                print("== throughput with 1000 subscribers, rising rates", flush=True)
                for server in (*SERVERS, "product-autobahn"):
                    # The tutorial design saturates near 2,000 deliveries/s: sweep it lower.
                    for rate in TUTORIAL_RATES if server == "tutorial" else rates:
                        r = bench.scenario(server, 1000, rate, 4)
                        results["throughput"].append(r)
                        if not r["sustained"]:
                            break
                print("== two product processes (daphne on two ports), one topic", flush=True)
                for rate in (20, 60):
                    results["two_processes"].append(
                        bench.scenario("product", 1000, rate, 4, servers=["product", "product2"])
                    )
                print("== scheduler", flush=True)
                results["scheduler"] = scheduler_bench(bench.env)
            finally:
                bench.stop()
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
    }
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["command"] = command
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "results.json").write_text(json.dumps(results, indent=1))
    from report import write_report

    write_report(results, out)
    print(f"wrote {args.out}")


def _revision(path: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(path), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return found.stdout.strip()[:80]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
