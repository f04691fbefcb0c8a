"""One client floods a server with 10,000 frames; how long does everyone else wait?

A bystander sends a WebSocket ping every 2 ms and times each pong (answered by the server's
WebSocket layer, so the same probe works against the product and the raw ``websockets``
broadcast); after a quiet second the flooder writes 10,000 ``{"type": "ping"}`` frames in
one burst and reads until the server closes it. Reported: the bystander's round trips
before and during the flood (p50/p99/max), how the flooder was closed, and after how many
answers.

    python bench/flood.py --url ws://127.0.0.1:8000/ws/ [--frames 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

try:
    from loadgen import client_frame
except ImportError:  # run as bench.flood
    from bench.loadgen import client_frame


def raw_handshake(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: realtime.v1\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    return sock


def flood(url: str, frames: int, report: dict) -> None:
    sock = raw_handshake(url)
    report["started"] = time.monotonic()
    try:
        sock.sendall(client_frame('{"type": "ping"}') * frames)
    except OSError as exc:
        report["send_error"] = type(exc).__name__
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    report["ended"] = time.monotonic()
    texts, code = 0, None
    while len(data) >= 2:
        n, header = data[1] & 0x7F, 2
        if n == 126:
            header, n = 4, int.from_bytes(data[2:4], "big")
        elif n == 127:
            header, n = 10, int.from_bytes(data[2:10], "big")
        opcode = data[0] & 0x0F
        if opcode == 1:
            texts += 1
        elif opcode == 8:
            code = int.from_bytes(data[header : header + 2], "big")
        data = data[header + n :]
    report.update(answers=texts, close_code=code)
    sock.close()


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    values = sorted(values)
    return {
        "n": len(values),
        "p50_ms": statistics.median(values) * 1000,
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] * 1000,
        "max_ms": values[-1] * 1000,
    }


async def measure(url: str, frames: int, quiet: float = 1.0, after: float = 2.0) -> dict:
    report: dict = {}
    samples: list[tuple[float, float]] = []
    async with connect(url, subprotocols=["realtime.v1"], ping_interval=None) as ws:
        thread = None
        started = time.monotonic()
        while time.monotonic() - started < quiet + after:
            if thread is None and time.monotonic() - started >= quiet:
                thread = threading.Thread(target=flood, args=(url, frames, report), daemon=True)
                thread.start()
            sent = time.monotonic()
            pong = await ws.ping()
            await asyncio.wait_for(pong, 10)
            samples.append((sent, time.monotonic() - sent))
            await asyncio.sleep(0.002)
        thread.join(30)
    begin = report.get("started", started + quiet)
    before = [rtt for at, rtt in samples if at < begin]
    during = [rtt for at, rtt in samples if at >= begin]
    return {
        "frames": frames,
        "quiet": summary(before),
        "flood": summary(during),
        "flooder_close_code": report.get("close_code"),
        "flooder_answers": report.get("answers"),
        "flooder_seconds": round(report.get("ended", 0) - report.get("started", 0), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--frames", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.url, args.frames))))


if __name__ == "__main__":
    main()
