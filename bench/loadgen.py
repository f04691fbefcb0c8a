"""An efficient WebSocket load generator: N clients on raw asyncio Protocols in one process.

It speaks just enough RFC 6455 for the benchmark (handshake, masked client text frames,
unmasked server frames, ping → pong) so that the clients cost far less than the servers they
measure. Each message's data carries its send time (``t``, ns) and index (``i``); the
generator records latency, and per client which indices arrived (lost, duplicated).

Protocol with the orchestrator: prints one JSON line ``{"ready": ...}`` once every client is
connected (and, with --subscribe, subscribed), then waits for all ``--count`` messages on every
client (or ``--drain`` seconds after the first arrival, at the latest), prints one JSON line of
results and exits. Run by bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
from urllib.parse import urlsplit


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


def client_frame(text: str) -> bytes:
    """A masked text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class Stats:
    def __init__(self, clients: int, count: int):
        self.count = count
        self.expected = clients * count
        self.received = 0
        self.duplicates = 0
        self.latencies: list[int] = []
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.done = asyncio.Event()
        self.other_frames = 0


class Client(asyncio.Protocol):
    def __init__(
        self,
        host: str,
        path: str,
        origin: str,
        subscribe: str | None,
        stats: Stats,
        ready: asyncio.Future,
    ):
        self.host, self.path, self.origin = host, path, origin
        self.subscribe = subscribe
        self.stats = stats
        self.ready = ready
        self.buffer = bytearray()
        self.handshaken = False
        self.transport: asyncio.Transport | None = None
        self.seen = bytearray(stats.count)
        self.subscribed: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: realtime.v1\r\nOrigin: {self.origin}\r\n\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    expected_status = b" 101"

    def take_head(self) -> bool:
        """Consume the HTTP response head once it is complete; True when it is and it is the
        expected status (a wrong one fails ``ready``)."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        if self.expected_status not in bytes(buf[:12]):
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(bytes(buf[:end]).decode()))
            return False
        del buf[: end + 4]
        self.handshaken = True
        return True

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.handshaken:
            if not self.take_head():
                return
            if not self.ready.done():
                self.ready.set_result(True)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, offset = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, offset = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, offset = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < offset + length:
                break
            start = pos + offset
            payload = bytes(buf[start : start + length])
            pos = start + length
            opcode = b0 & 0x0F
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9 and self.transport is not None:  # ping → pong (masked)
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + body)
        if pos:
            del buf[:pos]

    def on_text(self, payload: bytes) -> None:
        now = time.time_ns()
        # Fast path for benchmark messages: ...,"data":{"t":<ns>,"i":<index>}}
        at = payload.rfind(b'"data":{"t":')
        if at >= 0 and payload.startswith(b'{"type":"message"'):
            comma = payload.index(b",", at + 12)
            sent = int(payload[at + 12 : comma])
            i = int(payload[payload.index(b":", comma) + 1 : payload.index(b"}", comma)])
            stats = self.stats
            if self.seen[i]:
                stats.duplicates += 1
                return
            self.seen[i] = 1
            stats.received += 1
            stats.latencies.append(now - sent)
            stats.last_arrival = time.monotonic()
            if stats.first_arrival is None:
                stats.first_arrival = stats.last_arrival
            if stats.received >= stats.expected:
                stats.done.set()
            return
        kind = json.loads(payload).get("type")
        if kind == "subscribed" and self.subscribed is not None and not self.subscribed.done():
            self.subscribed.set_result(True)
        else:
            self.stats.other_frames += 1

    def send_subscribe(self) -> asyncio.Future:
        self.subscribed = asyncio.get_running_loop().create_future()
        assert self.transport is not None and self.subscribe is not None
        self.transport.write(client_frame(self.subscribe))
        return self.subscribed


class SseClient(Client):
    """The same client on Server-Sent Events: ``GET /events/?topic=<topic>`` (HTTP/1.0, so the
    body is the raw event stream), ready once the ``subscribed`` event arrived; each
    ``message`` event's data is the WebSocket frame, measured the same way."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        topic = json.loads(self.subscribe or "{}").get("topic", "")
        transport.write(
            f"GET /events/?topic={topic} HTTP/1.0\r\nHost: {self.host}\r\n"
            f"Accept: text/event-stream\r\n\r\n".encode()
        )

    expected_status = b" 200"

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.handshaken and not self.take_head():
            return
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block = bytes(buf[:end])
            del buf[: end + 2]
            kind, payload = b"", b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:]
                elif line.startswith(b"data: "):
                    payload = line[6:]
            if kind == b"message":
                self.on_text(payload)
            elif kind == b"subscribed" and not self.ready.done():
                self.ready.set_result(True)

    def send_subscribe(self) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.set_result(True)  # the stream subscribed when it opened
        return done


async def open_clients(
    urls: list[str],
    n: int,
    subscribe: str | None,
    stats: Stats,
    concurrency: int,
    sse: bool = False,
    topic_prefix: str | None = None,
    topic_offset: int = 0,
) -> tuple[list[Client], float]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    clients: list[Client] = []

    async def one(k: int) -> None:
        url = urlsplit(urls[k % len(urls)])
        async with gate:
            ready = loop.create_future()
            origin = f"http://{url.hostname}:{url.port}"
            kind = SseClient if sse else Client
            own = subscribe
            if topic_prefix is not None:  # a topic of its own: <prefix><k>
                own = json.dumps(
                    {"type": "subscribe", "topic": f"{topic_prefix}{k + topic_offset}"}
                )
            client = kind(f"{url.hostname}:{url.port}", url.path or "/", origin, own, stats, ready)
            for attempt in range(5):
                try:
                    await loop.create_connection(lambda: client, url.hostname, url.port)
                    break
                except OSError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            await asyncio.wait_for(ready, 60)
            clients.append(client)

    started = time.monotonic()
    await asyncio.gather(*(one(k) for k in range(n)))
    return clients, time.monotonic() - started


def percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k] / 1e6  # ms


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", action="append", required=True, help="ws://host:port/path")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--topic", help="subscribe to this topic after the handshake")
    parser.add_argument(
        "--topic-prefix", help="each client k subscribes to its own topic <prefix><k> instead"
    )
    parser.add_argument(
        "--topic-offset", type=int, default=0, help="with --topic-prefix: k starts here"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="stop when nothing arrived for this long after publishing",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=20.0,
        help="stop this long after publishing ended, whatever still arrives",
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--sse", action="store_true", help="Server-Sent Events (/events/?topic=) instead"
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after ready, wait for a line on stdin and exit (memory runs)",
    )
    args = parser.parse_args()
    raise_fd_limit()
    stats = Stats(args.clients, max(args.count, 1))
    subscribe = json.dumps({"type": "subscribe", "topic": args.topic}) if args.topic else None
    if args.topic_prefix is not None:
        subscribe = "per-client"  # made for each client by open_clients
    clients, open_seconds = await open_clients(
        args.url,
        args.clients,
        subscribe,
        stats,
        args.concurrency,
        args.sse,
        args.topic_prefix,
        args.topic_offset,
    )
    subscribe_seconds = 0.0
    if subscribe is not None:
        started = time.monotonic()
        gate = asyncio.Semaphore(args.concurrency)

        async def sub(client: Client) -> None:
            async with gate:
                await asyncio.wait_for(client.send_subscribe(), 60)

        await asyncio.gather(*(sub(c) for c in clients))
        subscribe_seconds = time.monotonic() - started
    print(
        json.dumps(
            {"ready": True, "open_seconds": open_seconds, "subscribe_seconds": subscribe_seconds}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    if args.hold:
        await loop.run_in_executor(None, sys.stdin.readline)
        print(json.dumps({"held": True}), flush=True)
        return
    # Wait for everything, or until no progress for `drain` seconds after sending ended.
    start_line = await loop.run_in_executor(None, sys.stdin.readline)  # publisher finished
    del start_line
    last_count, quiet_since = -1, time.monotonic()
    give_up = time.monotonic() + args.max_wait
    while not stats.done.is_set() and time.monotonic() < give_up:
        try:
            await asyncio.wait_for(stats.done.wait(), 0.5)
        except TimeoutError:
            pass
        if stats.received != last_count:
            last_count, quiet_since = stats.received, time.monotonic()
        elif time.monotonic() - quiet_since > args.drain:
            break
    lat = sorted(stats.latencies)
    seen_total = sum(sum(c.seen) for c in clients)
    print(
        json.dumps(
            {
                "open_seconds": open_seconds,
                "clients": args.clients,
                "count": args.count,
                "expected": stats.expected,
                "received": stats.received,
                "lost": stats.expected - seen_total,
                "duplicates": stats.duplicates,
                "p50_ms": percentile(lat, 50),
                "p90_ms": percentile(lat, 90),
                "p99_ms": percentile(lat, 99),
                "max_ms": lat[-1] / 1e6 if lat else float("nan"),
                "first_arrival": stats.first_arrival,
                "last_arrival": stats.last_arrival,
                "other_frames": stats.other_frames,
            }
        ),
        flush=True,
    )
    for client in clients:
        if client.transport is not None:
            client.transport.abort()


if __name__ == "__main__":
    try:
        import uvloop  # the load generator must be cheaper than the servers it measures

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
