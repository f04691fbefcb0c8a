"""A raw WebSocket client over a plain socket, for tests that must control bytes and timing
(clients that never read, drop the TCP connection, or answer close frames by hand)."""

from __future__ import annotations

import base64
import os
import socket

from bench.loadgen import client_frame

__all__ = ["FrameReader", "client_frame", "frames", "handshake", "split_frame", "wait_closed"]


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


class FrameReader:
    """Server frames off a raw socket, one at a time (text frames as JSON; pings skipped)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def next(self, timeout: float = 10) -> dict:
        import json

        self.sock.settimeout(timeout)
        while True:
            frame = self._take()
            if frame is not None:
                opcode, payload = frame
                if opcode == 1:
                    return json.loads(payload)
                if opcode == 8:
                    raise ConnectionError("closed by the server")
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.data += chunk

    def _take(self) -> tuple[int, bytes] | None:
        found = split_frame(self.data)
        if found is None:
            return None
        opcode, payload, self.data = found
        return opcode, payload


def split_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, the rest) of the first complete server frame in ``data``, or None."""
    if len(data) < 2:
        return None
    n, header = data[1] & 0x7F, 2
    if n == 126:
        header = 4
    elif n == 127:
        header = 10
    if len(data) < header:
        return None
    if n >= 126:
        n = int.from_bytes(data[2:header], "big")
    if len(data) < header + n:
        return None
    return data[0] & 0x0F, data[header : header + n], data[header + n :]


def frames(data: bytes):
    """Every complete server frame in ``data``: (opcode, payload)."""
    while (found := split_frame(data)) is not None:
        opcode, payload, data = found
        yield opcode, payload
