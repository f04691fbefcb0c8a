"""Close codes as a client receives them from real daphne (started both by realtime.server and
plainly), and the clean-up every close path must run: no leaked subscription, presence or
per-address count, whatever ended the connection."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.rawws import client_frame, handshake, wait_closed

pytestmark = pytest.mark.e2e

BOTH = pytest.mark.parametrize("plain", [False, True], ids=["realtime.server", "plain-daphne"])


async def close_code(ws, timeout: float = 10) -> int | None:
    """Read until the server closes; return the code the client received."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def wait_presence(site, expected: dict[str, int], timeout: float = 15) -> None:
    """Wait until the site's hubs report exactly these counts (zeros left out)."""
    async with asyncio.timeout(timeout):
        while True:
            found = {k: v for k, v in (await asyncio.to_thread(site.presence)).items() if v}
            if found == expected:
                return
            await asyncio.sleep(0.2)


@BOTH
async def test_abuse_closes_1008_and_cleans_up(live_site, plain):
    site = live_site(scheduler=False, plain=plain, realtime={"ABUSE_BUDGET": 2})
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": "news"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        for _ in range(5):
            await ws.send("not json")
        assert await close_code(ws) == 1008
    await wait_presence(site, {})
    assert "Traceback" not in site.daphne.output()


@BOTH
async def test_oversized_frame_closes_1009(live_site, plain):
    site = live_site(scheduler=False, plain=plain, realtime={"MAX_FRAME_BYTES": 1000})
    async with connect(site.ws_url, subprotocols=["realtime.v1"], max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "id": "x" * 5000}))
        assert await close_code(ws) == 1009
    assert "Traceback" not in site.daphne.output()


@BOTH
async def test_too_many_subscriptions_abuse_closes_1008(live_site, plain):
    site = live_site(
        scheduler=False, plain=plain, realtime={"MAX_SUBSCRIPTIONS": 1, "ABUSE_BUDGET": 1}
    )
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        for slug in ("news", "chat", "clock", "site-stats"):
            await ws.send(json.dumps({"type": "subscribe", "topic": slug}))
        assert await close_code(ws) == 1008
    await wait_presence(site, {})


async def test_server_closes_do_not_leak_per_address_slots(live_site):
    site = live_site(
        scheduler=False, realtime={"MAX_CONNECTIONS_PER_ADDRESS": 2, "ABUSE_BUDGET": 1}
    )
    for _ in range(4):  # each closed by the server with 1008
        async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
            await ws.recv()
            for _ in range(3):
                await ws.send("[]")
            assert await close_code(ws) == 1008
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as a:
        assert json.loads(await a.recv())["type"] == "welcome"
        async with connect(site.ws_url, subprotocols=["realtime.v1"]) as b:
            assert json.loads(await b.recv())["type"] == "welcome"


# --- churn ---------------------------------------------------------------------------------------

CYCLES, WARMUP, WORKERS = 6_000, 1_000, 8
TOPICS = ("news", "chat", "clock")


def read_frames(sock: socket.socket, count: int) -> None:
    """Read until ``count`` text frames (welcome, subscribed...) have arrived."""
    data = b""
    while True:
        seen, i = 0, 0
        while i + 2 <= len(data):
            n = data[i + 1] & 0x7F
            header = 2 + (2 if n == 126 else 8 if n == 127 else 0)
            if n >= 126:
                if i + header > len(data):
                    break
                n = int.from_bytes(data[i + 2 : i + header], "big")
            if i + header + n > len(data):
                break
            seen += 1
            i += header + n
        if seen >= count:
            return
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk


def one_cycle(port: int, how: str) -> None:
    sock = handshake(port)
    try:
        frames = [
            client_frame(json.dumps({"type": "subscribe", "topic": t, "since": 10**6}))
            for t in TOPICS
        ]
        if how == "server":  # broken frames until the server closes it (1008)
            frames += [client_frame("x")] * 3
        sock.sendall(b"".join(frames))
        try:
            read_frames(sock, 1 + len(TOPICS))
        except (ConnectionResetError, ConnectionError):
            if how != "server":  # only the server's own close may end it this early
                raise
            return
        if how == "clean":
            mask = os.urandom(4)
            code = (1000).to_bytes(2, "big")
            sock.sendall(b"\x88\x82" + mask + bytes(b ^ mask[i] for i, b in enumerate(code)))
            wait_closed(sock)
        elif how == "server":  # answer its close frame, as clients do, then wait for the end
            sock.settimeout(10)
            data = b""
            while b"\x88" not in data:  # frames here are ASCII JSON: 0x88 starts the close
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    return
                if not chunk:
                    return
                data += chunk
            mask = os.urandom(4)
            try:
                sock.sendall(b"\x88\x80" + mask)
            except (ConnectionResetError, BrokenPipeError):
                return  # answered after the server's close-handshake timeout (1 s, under load)
            wait_closed(sock)
        else:  # drop the TCP connection
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    finally:
        sock.close()


def churn(port: int, cycles: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hows = [random.choice(("clean", "drop", "server")) for _ in range(cycles)]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda how: one_cycle(port, how), hows))


@pytest.mark.timeout(600)
async def test_connection_churn_leaks_nothing(live_site):
    """6,000 connect → subscribe to 3 topics → close (clean, dropped, closed by the server):
    presence back to zero, no topic left in the hub, memory flat after the first 1,000."""
    site = live_site(scheduler=False, realtime={"ABUSE_BUDGET": 1})
    process = psutil.Process(site.daphne.pid)
    await asyncio.to_thread(churn, site.port, WARMUP)
    await wait_presence(site, {})
    rss_warm = process.memory_info().rss
    await asyncio.to_thread(churn, site.port, CYCLES - WARMUP)
    await wait_presence(site, {})
    rss_end = process.memory_info().rss
    assert rss_end <= rss_warm * 1.10, (rss_warm, rss_end)
    assert "Traceback" not in site.daphne.output()
