"""Writing frames straight to daphne's sockets: the fast path of the fan-out engine.

Under daphne every ASGI ``websocket.send`` goes through the session middleware's send wrapper,
daphne's ``handle_reply``, autobahn's ``sendMessage`` (framing per connection) and Twisted's
write path, which buffers every write and registers the socket with the event loop for a later
``send()``: two ``epoll_ctl`` calls and a loop callback per frame. For a fan-out, where the
same frame goes to thousands of sockets, this module builds the frame's bytes once (server
frames are not masked, so they are identical for every connection) and writes them to each
socket with one ``send()`` when Twisted has nothing buffered for it, or appends them to
Twisted's buffer otherwise, so frames stay in order either way.

It needs daphne's protocol object, which daphne passes as the first argument of the ASGI
``send`` it gives the application; ``RawSendMiddleware`` (outermost) records that ``send`` in
the scope. Anywhere else (tests' communicators, other servers) ``daphne_protocol`` returns
None and the consumer uses the ordinary ASGI send.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

SCOPE_KEY = "realtime.raw_send"
STATE_OPEN = 3  # autobahn WebSocketProtocol.STATE_OPEN


class RawSendMiddleware:
    """Outermost ASGI middleware: keep the server's own ``send`` in the scope."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.app({**scope, SCOPE_KEY: send}, receive, send)


def daphne_protocol(send: Any) -> Any | None:
    """daphne's WebSocketProtocol behind ``send``, or None when not under daphne."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    server = getattr(send.func, "__self__", None)
    protocol = send.args[0]
    if type(server).__module__ != "daphne.server" or not hasattr(protocol, "transport"):
        return None
    return protocol


class Frame:
    """One outgoing text frame: its text for the ASGI path, its wire bytes for the fast path."""

    __slots__ = ("payload", "_text", "_wire")

    def __init__(self, payload: bytes, text: str | None = None):
        self.payload = payload
        self._text = text
        self._wire: bytes | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.payload.decode()
        return self._text

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            n = len(self.payload)
            if n < 126:
                header = struct.pack("!BB", 0x81, n)
            elif n < 65536:
                header = struct.pack("!BBH", 0x81, 126, n)
            else:
                header = struct.pack("!BBQ", 0x81, 127, n)
            self._wire = header + self.payload
        return self._wire


def buffered(protocol: Any) -> int:
    """Bytes Twisted holds for this connection, not yet accepted by the kernel."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return 0
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def write(protocol: Any, data: bytes) -> bool:
    """Write a complete frame to the connection; False when it is not open."""
    if protocol.state != STATE_OPEN:
        return False
    transport = protocol.transport
    if transport is None or not transport.connected or transport.disconnecting:
        return False
    if (
        not transport.dataBuffer
        and not transport._tempDataLen
        and not getattr(transport, "TLS", False)
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return False  # broken: Twisted notices on its next read and closes it
        if sent == len(data):
            return True
        data = data[sent:]
    transport.write(data)
    return True


class _LazyPformat:
    """``pprint.pformat(obj)``, computed only if someone turns it into a string."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __str__(self) -> str:
        import pprint

        return pprint.pformat(self.obj)


def defer_autobahn_config_log() -> None:
    """autobahn pretty-prints its whole configuration for a debug log line on every new
    connection, even when debug logging is off (12 % of a connection's set-up cost here).
    Give it a lazy pformat: the same text when that log line is enabled, no cost otherwise."""
    try:
        from autobahn.websocket import protocol as autobahn_protocol
    except ImportError:
        return
    if getattr(autobahn_protocol, "pformat", None) is not _LazyPformat:
        autobahn_protocol.pformat = _LazyPformat
