"""Alternating pairs of one scenario on several servers, for finding which change moved a
figure: ``python bench/pairs.py --servers product,product-gc --rate 100 --pairs 4
[--baseline PATH] [--loadgen python]``. Prints each run and the mean delivered/s and p50 per
server, relative to the first; writes nothing."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Bench, EmbeddedRedis, ensure_node_loadgen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="product-before,product")
    parser.add_argument("--baseline")
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--loadgen", choices=("python", "node"), default="python")
    args = parser.parse_args()
    if args.loadgen == "node":
        ensure_node_loadgen()
    servers = args.servers.split(",")
    means: dict[str, list[tuple[float, float]]] = {s: [] for s in servers}
    waits: dict[str, list[float]] = {s: [] for s in servers}  # the product's publisher's
    with tempfile.TemporaryDirectory(prefix="realtime-pairs-") as tmp:
        workdir = Path(tmp)
        with EmbeddedRedis(directory=workdir / "redis") as redis:
            bench = Bench(workdir, redis.url, False, args.loadgen)
            try:
                bench.start_servers(baseline=Path(args.baseline) if args.baseline else None)
                for _ in range(args.pairs):
                    for server in servers:
                        r = bench.scenario(server, args.clients, args.rate, args.seconds)
                        means[server].append((r["delivered_per_s"], r["p50_ms"]))
                        if "publish_wait_p50_us" in r:
                            waits[server].append(r["publish_wait_p50_us"])
            finally:
                bench.stop()
    first = servers[0]
    base = sum(d for d, _ in means[first]) / len(means[first])
    for server, rows in means.items():
        delivered = sum(d for d, _ in rows) / len(rows)
        p50 = sum(p for _, p in rows) / len(rows)
        ratio = delivered / base
        wait = ""
        if waits[server]:
            wait = f"  publish wait {sum(waits[server]) / len(waits[server]) / 1000:.2f} ms"
        print(f"{server:16} delivered/s {delivered:9.0f} ({ratio:.3f}x)  p50 {p50:8.1f} ms{wait}")


if __name__ == "__main__":
    main()
