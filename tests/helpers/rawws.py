"""A raw WebSocket client over a plain socket, for tests that must control bytes and timing
(clients that never read, drop the TCP connection, or answer close frames by hand)."""

from __future__ import annotations

import base64
import os
import socket

from bench.loadgen import client_frame

__all__ = ["client_frame", "handshake", "wait_closed"]


def handshake(port: int, *, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    """Connect and upgrade to WebSocket (subprotocol realtime.v1); return the socket."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Protocol: realtime.v1\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: nothing after the head is consumed
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return sock


def wait_closed(sock: socket.socket, timeout: float = 10) -> int:
    """Read until the server closes the connection (a reset counts as closed); return the
    number of bytes read meanwhile."""
    sock.settimeout(timeout)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total
