"""A reader is judged by whether it drains, against real daphne: a client resuming behind a
backlog of large messages catches up over WebSockets and Server-Sent Events (the replay is
paced by what the socket drains), while one that stops reading is still dropped; a client
flooding frames is closed without the server reading the rest of its flood."""

from __future__ import annotations

import json
import socket

import pytest
from websockets.sync.client import connect

from tests.helpers.processes import manage
from tests.helpers.rawws import FrameReader, client_frame, frames, handshake, wait_closed
from tests.helpers.sse import EventSourceClient

pytestmark = pytest.mark.e2e

BACKLOG = 500
FILL = (
    "from realtime.outbox import publish_many\n"
    "publish_many([('{slug}', {{'n': i, 'pad': 'x' * {size}}}) for i in range({count})])\n"
)


def fill(site, slug: str, size: int, count: int = BACKLOG) -> None:
    manage(site.env, "topics", "add", slug, "--backlog", "0", "--retain", "1000")
    site.shell(FILL.format(slug=slug, size=size, count=count))


def test_a_resume_behind_large_messages_catches_up_over_both_transports(live_site):
    site = live_site(scheduler=False)
    for size in (4_000, 20_000):
        slug = f"bulk-{size}"
        fill(site, slug, size)
        # WebSocket: resume from 0, reading as fast as the client can.
        with connect(site.ws_url, subprotocols=["realtime.v1"], max_size=None) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            ws.send(json.dumps({"type": "subscribe", "topic": slug, "since": 0}))
            subscribed = json.loads(ws.recv(timeout=10))
            assert subscribed["type"] == "subscribed" and subscribed["seq"] == BACKLOG
            seqs = [json.loads(ws.recv(timeout=10))["seq"] for _ in range(BACKLOG)]
        assert seqs == list(range(1, BACKLOG + 1)), size
        # Server-Sent Events: the same backlog through the same pacing.
        stream = EventSourceClient(f"{site.url}/events/?topic={slug}&since=0")
        try:
            events = stream.messages(BACKLOG)
        finally:
            stream.close()
        assert [e["data"]["seq"] for e in events] == list(range(1, BACKLOG + 1)), size
        assert events[-1]["id"] == f"{slug}:{BACKLOG}"
    assert "dropping slow reader" not in site.daphne.output()


def test_a_client_that_stops_reading_a_replay_is_dropped(live_site):
    site = live_site(scheduler=False, realtime={"SEND_STALL_TIMEOUT": 1.0})
    fill(site, "bulk", 20_000)
    sock = handshake(site.port, rcvbuf=4096)
    sock.sendall(client_frame(json.dumps({"type": "subscribe", "topic": "bulk", "since": 0})))
    # Never read: the server drops it once its backlog has not shrunk for a second.
    site.daphne.wait_for_output("dropping slow reader", timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    wait_closed(sock, timeout=20)  # what reached the kernel is read, then the connection ends
    sock.close()
    assert "subscribe" not in site.daphne.output().split("dropping slow reader")[1]


def test_a_frame_flood_is_closed_without_reading_the_rest(live_site):
    """10,000 pings in one burst, then a WebSocket ping: the flooder gets pongs and errors up
    to its budgets, then 1008, and the server reads no further than its budgets need (frames
    are read as fast as they are handled, and nothing after the close): the trailing ping is
    never read, so never answered. Another client is served meanwhile. (What the flood costs
    the other clients in time is measured by bench/flood.py: bench/RESULTS.md.)"""
    # The bucket refills so slowly that no token comes back while the flood is read, however
    # slow the machine: exactly FRAME_BURST pongs.
    site = live_site(scheduler=False, realtime={"FRAME_RATE_PER_S": 0.001})
    bystander = handshake(site.port)
    reader = FrameReader(bystander)
    assert reader.next()["type"] == "welcome"
    flooder = handshake(site.port)
    trailing_ping = bytes([0x89, 0x80 | 5]) + b"\0\0\0\0" + b"after"  # masked with zeros
    flooder.settimeout(10)
    flooder.sendall(client_frame('{"type": "ping"}') * 10_000 + trailing_ping)
    data = b""
    try:
        while chunk := flooder.recv(65536):  # until the server ends the connection
            data += chunk
    except ConnectionResetError:
        pass
    got = list(frames(data))
    assert close_code(data) == 1008
    assert not [p for opcode, p in got if opcode == 10], "the ping after the flood was read"
    texts = [json.loads(p) for opcode, p in got if opcode == 1]
    # The budgets: FRAME_BURST pongs, then ABUSE_BUDGET + 1 refusals (defaults 100 and 20).
    assert [t["type"] for t in texts].count("pong") == 100
    assert {t.get("code") for t in texts if t["type"] == "error"} == {"rate_limited"}
    assert len(texts) <= 100 + 21 + 1, len(texts)
    bystander.sendall(client_frame('{"type": "ping", "id": "still"}'))
    assert reader.next() == {"type": "pong", "id": "still"}
    flooder.close()
    bystander.close()


def close_code(data: bytes) -> int | None:
    for opcode, payload in frames(data):
        if opcode == 8:
            return int.from_bytes(payload[:2], "big")
    return None
