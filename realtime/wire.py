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
import logging
import struct
import sys
from typing import Any

from realtime import metrics

logger = logging.getLogger("realtime.wire")

SCOPE_KEY = "realtime.raw_send"
STATE_OPEN = 3  # autobahn WebSocketProtocol.STATE_OPEN


class RawSendMiddleware:
    """Outermost ASGI middleware: keep the server's own ``send`` in the scope."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.app({**scope, SCOPE_KEY: send}, receive, send)


_warned = False


def daphne_protocol(send: Any) -> Any | None:
    """daphne's WebSocketProtocol behind ``send``, or None when not under daphne.

    Relies on daphne giving applications ``functools.partial(server.handle_reply, protocol)``
    as ``send`` (daphne 4.x, ``Server.create_application``); ``test_wire`` pins it. Under
    daphne, a ``send`` of another shape is logged once: the fast path and the exact close
    codes are then unavailable.
    """
    global _warned
    server = getattr(getattr(send, "func", None), "__self__", None)
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        if type(server).__module__ == "daphne.server" and hasattr(protocol, "transport"):
            # When autobahn fails a connection (a frame over the size limit, a protocol
            # error) it sends the close code (1009...) instead of dropping the TCP stream.
            protocol.failByDrop = False
            return protocol
    if "daphne.server" in sys.modules and not _warned:
        _warned = True
        logger.warning(
            "running under daphne but its protocol object is not reachable from the ASGI "
            "send (%r): frames go through the ordinary ASGI send and close codes other than "
            "1000 and 3000-4999 become 1011. Check the daphne version.",
            send,
        )
    return None


def close(protocol: Any, code: int, reason: str) -> None:
    """Send a close frame with ``code``. autobahn's ``sendClose`` (what daphne calls for an
    ASGI ``websocket.close``) refuses 1001, 1008, 1009 and 1011 from applications, so the
    frame goes through its lower-level ``sendCloseFrame``; autobahn then completes the
    closing handshake and daphne sends the application ``websocket.disconnect``."""
    if protocol.state == STATE_OPEN:
        protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120], isReply=False)


def failure_code(protocol: Any) -> int | None:
    """The close code autobahn sent when it failed the connection by itself (a frame over
    ``--websocket-max-message-size``: 1009; a protocol error: 1002...), else None. The
    application never sees those closes otherwise."""
    if protocol is not None and getattr(protocol, "failedByMe", False):
        return getattr(protocol, "localCloseCode", None)
    return None


def drop(protocol: Any) -> None:
    """Drop the TCP connection at once (a client that does not read cannot get a close
    frame: its buffer is full)."""
    protocol.dropConnection(abort=True)


class ReadGate:
    """Read a client's frames no faster than the application handles them (backpressure).

    autobahn parses everything Twisted reads (64 KiB at a time) in one go and daphne queues
    every frame for the application without bound, so a client that writes 10,000 frames at
    once made the server parse and queue all of them before anyone else was served (p99
    158-220 ms for the other clients of the worker). The gate wraps the protocol's
    ``dataReceived``: data goes to autobahn in pieces of ``PIECE`` bytes while fewer than
    ``MAX_QUEUED`` frames wait for the application; beyond, the rest is kept and Twisted stops
    reading the socket (the client's TCP window closes) until the application has taken
    frames (``taken``). ``stop`` (the connection is being closed for abuse): what the client
    sends after is skipped frame by frame by its header, unparsed, but for its close frame,
    which completes the closing handshake: frames after the close cost almost nothing.
    """

    PIECE = 4096
    MAX_QUEUED = 64

    __slots__ = ("protocol", "queue", "feed", "kept", "paused", "stopped", "skip", "head")

    def __init__(self, protocol: Any):
        self.protocol = protocol
        self.queue = protocol.application_queue  # daphne's queue of ASGI events
        self.feed = protocol.dataReceived
        self.kept = b""
        self.paused = self.stopped = False
        self.skip, self.head = 0, b""  # after stop: payload bytes to skip, a partial header
        protocol.dataReceived = self.data_received

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            self._skim(data)
            return
        if self.kept:
            self.kept += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        piece, limit, queue = self.PIECE, self.MAX_QUEUED, self.queue
        if len(data) <= piece and queue.qsize() < limit:
            self.feed(data)  # the usual case: a small read, a short queue
            return
        for start in range(0, len(data), piece):
            if self.stopped:
                return
            if queue.qsize() >= limit:
                self.kept = data[start:]
                self._pause()
                return
            self.feed(data[start : start + piece])

    def taken(self) -> None:
        """The application took a frame: read on once half the queue is gone."""
        if self.paused and not self.stopped and self.queue.qsize() < self.MAX_QUEUED // 2:
            kept, self.kept = self.kept, b""
            self.paused = False
            self._feed(kept)
            if not self.paused:
                self.protocol.transport.resumeProducing()

    def stop(self) -> None:
        """Parse nothing more from this client but its close frame: the frames it sends
        after are skipped by their headers (a few operations each, not autobahn's parse),
        and only a close frame reaches autobahn, which then ends the connection cleanly."""
        kept, self.kept = self.kept, b""
        self.stopped = True
        if self.paused:
            self.paused = False
            transport = self.protocol.transport
            if transport is not None:
                transport.resumeProducing()
        # What autobahn was not given yet may hold the client's close: skim it too. (A frame
        # autobahn had started to read when the gate stopped is left to it: PIECE bounds it.)
        if kept:
            self._skim(kept)

    def _skim(self, data: bytes) -> None:
        """Skip whole client frames by their headers; hand a close frame to autobahn."""
        if self.skip:
            taken = min(self.skip, len(data))
            self.skip -= taken
            data = data[taken:]
        data = self.head + data
        self.head = b""
        while data:
            if len(data) < 2:
                self.head = data
                return
            n, header = data[1] & 0x7F, 2
            if n == 126:
                header = 4
            elif n == 127:
                header = 10
            header += 4 if data[1] & 0x80 else 0  # the client's mask
            if len(data) < header:
                self.head = data
                return
            if n >= 126:
                n = int.from_bytes(data[2 : 4 if n == 126 else 10], "big")
            if data[0] & 0x0F == 8:  # a close frame: autobahn answers it and ends the TCP
                self.stopped = False  # (autobahn reads nothing after a close)
                self.feed(data)
                return
            if len(data) < header + n:
                self.skip = header + n - len(data)
                return
            data = data[header + n :]

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            transport = self.protocol.transport
            if transport is not None:
                transport.pauseProducing()


def forget_http_channel(protocol: Any) -> bool:
    """Let go of the HTTP channel that read the handshake. After the upgrade Twisted's
    transport still holds it as its registered producer, and with it the request, its headers,
    its buffers and its head deadline: about 5 KB for the connection's whole life
    (``bench/connection_profile.py``), and some 40 objects of cyclic garbage after it. As a
    producer it does nothing for a WebSocket: it pauses the socket only between HTTP requests,
    and the upgrade's request never ends. True when it was let go."""
    transport = protocol.transport
    channel = getattr(transport, "producer", None)
    if transport is None or not isinstance(channel, _http_channel()):
        return False
    transport.unregisterProducer()
    # Nothing calls the channel again (the transport's protocol is the WebSocket's): empty it,
    # so that it and its request (which refer to each other) go now, by reference counting,
    # not in a later full collection.
    channel.setTimeout(None)
    vars(channel).clear()
    return True


@functools.cache
def _http_channel() -> type:
    """Twisted's ``HTTPChannel``, imported once: ``twisted.web.http`` is a deprecation proxy
    whose every attribute read (three in a ``from … import``) runs Python code."""
    from twisted.web.http import HTTPChannel

    return HTTPChannel


class Socket:
    """The daphne side of one WebSocket connection, what its ``Transport`` needs: frames
    written straight to the socket (``write_path``: a key of ``WRITERS``, or None for the
    ASGI send), what waits for the client, close codes, a drop, and the read gate."""

    def __init__(self, protocol: Any, write_path: str | None):
        self.protocol = protocol
        forget_http_channel(protocol)
        self.closed = False  # a close frame was sent (and counted)
        self.gate = ReadGate(protocol)  # frames read as fast as handled
        self.write = functools.partial(WRITERS[write_path], protocol) if write_path else None
        self.bursts = write_path == "socket"  # several frames may go in one write (``Burst``)
        self.waiting = functools.partial(waiting, protocol)

    def pending(self) -> int:
        return buffered(self.protocol)

    def close(self, code: int, reason: str, *, abusive: bool = False, label: str = "") -> bool:
        """Send the close frame (counted in the closes metric); an ``abusive`` client's next
        frames are not even read. False when it was sent already."""
        if self.closed:
            return False
        self.closed = True
        logger.info("closing %s code=%s: %s", label, code, reason)
        metrics.CLOSES.labels(str(code)).inc()
        close(self.protocol, code, reason)
        if abusive:
            self.gate.stop()  # the client's next frames are skipped, but for its close
        return True

    def drop(self) -> None:
        drop(self.protocol)

    def count_failure(self) -> None:
        """Count a close autobahn made by itself (1009: a frame over the size limit)."""
        code = failure_code(self.protocol)
        if code is not None and not self.closed:
            self.closed = True
            metrics.CLOSES.labels(str(code)).inc()


class Frame:
    """One outgoing text frame: its text for the ASGI path, its wire bytes for the fast path."""

    __slots__ = ("payload", "_text", "_wire", "_prepared")

    def __init__(self, payload: bytes, text: str | None = None):
        self.payload = payload
        self._text = text
        self._wire: bytes | None = None
        self._prepared: Any = None

    def prepared(self, factory: Any) -> Any:
        """autobahn's ``PreparedMessage`` of this frame (framed once, for every protocol of
        ``factory``)."""
        if self._prepared is None:
            self._prepared = factory.prepareMessage(self.payload)
        return self._prepared

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.payload.decode()
        return self._text

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = text_frame(self.payload)
        return self._wire


def text_frame(payload: bytes) -> bytes:
    """A server text frame's bytes: unmasked, so the same for every connection."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class Burst:
    """Several frames' bytes in one write (a replay). Only for the socket write path
    (``write``), which needs nothing of a frame but its ``wire``."""

    __slots__ = ("wire",)

    def __init__(self, wire: bytes):
        self.wire = wire


def waiting(protocol: Any) -> bool:
    """Whether Twisted holds any byte for this connection (cheaper than ``buffered``)."""
    transport = protocol.transport
    return transport is not None and bool(transport.dataBuffer or transport._tempDataLen)


def abort(protocol: Any) -> None:
    """Abort an HTTP response's connection (an event stream whose client does not read)."""
    transport = getattr(protocol, "transport", None)
    if transport is not None:
        transport.abortConnection()


def buffered(protocol: Any) -> int:
    """Bytes Twisted holds for this connection, not yet accepted by the kernel."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return 0
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def no_delay(protocol: Any) -> bool:
    """Turn Nagle's algorithm off for this connection (TCP_NODELAY), as autobahn does for
    sockets: an event stream writes small events that must leave at once, not wait for the
    client's delayed ACK (40 ms). True when set."""
    transport = getattr(protocol, "transport", None)
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is None:
        return False
    try:
        setter(True)
    except OSError:  # the connection is gone
        return False
    return True


def write_body(request: Any, data: bytes) -> bool:
    """Write more of a streaming response body (an event stream) the way ``write`` writes a
    socket frame: one ``send()`` when Twisted holds nothing for the connection, else queued
    behind what waits. Mirrors Twisted's ``Request.write`` once the head is out (chunked
    framing for HTTP/1.1, ``sentLength``); falls back to it otherwise. False when the
    response is over or the client gone."""
    if request.finished or request._disconnected:
        return False
    if not request.startedWriting:
        request.write(data)
        return True
    request.sentLength += len(data)
    if request.chunked:
        data = b"%x\r\n%b\r\n" % (len(data), data)
    transport = request.channel.transport
    if transport is None or not transport.connected or transport.disconnecting:
        return False
    if not (transport.dataBuffer or transport._tempDataLen) and not getattr(
        transport, "TLS", False
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


WAITING = 2  # write(): bytes already wait for this client; nothing written (see ``force``)


def write(protocol: Any, frame: Frame, force: bool = False, kind: str = "message") -> int:
    """Write a complete frame to the connection with one ``send()`` when Twisted holds
    nothing for it (``WRITE_PATH`` "socket"). 1: written (or queued behind what waits, with
    ``force``); 0: not open; ``WAITING``: bytes already wait for the client and ``force`` is
    off, so nothing was written (the caller holds it, drops a slow reader, or forces it).
    One call per delivery does the check and the write. ``kind`` (the frame's type) is for
    transports whose framing depends on it (Server-Sent Events); a socket ignores it."""
    if protocol.state != STATE_OPEN:
        return 0
    transport = protocol.transport
    if transport is None or not transport.connected or transport.disconnecting:
        return 0
    data = frame.wire
    corked = _cork.parts
    if corked is not None:
        held = corked.get(transport)
        if held is not None:  # this batch's earlier frames wait here: after them, in order
            held += data
            if len(held) >= CORK_BYTES:  # sent now: backpressure sees what the socket refused
                del corked[transport]
                _send(transport, held)
            return 1
    if transport.dataBuffer or transport._tempDataLen:
        if not force:
            return WAITING
    elif not getattr(transport, "TLS", False):
        if corked is not None:
            corked[transport] = bytearray(data)
            return 1
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return 0  # broken: Twisted notices on its next read and closes it
        if sent == len(data):
            return 1
        data = data[sent:]
    transport.write(data)
    return 1


class _Cork:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[Any, bytearray] | None = None


_cork = _Cork()
CORK_BYTES = 64 * 1024  # a socket's held frames are sent once they reach this


def cork() -> None:
    """From now until ``uncork``, ``write`` keeps each socket's frames and ``uncork`` sends
    them joined, one ``send()`` a socket: the hub corks while it delivers several messages it
    had at once (a saturated process falls behind), so a subscriber of them costs one system
    call, not one a message. A socket's held bytes are sent as soon as they reach
    ``CORK_BYTES``, so a slow reader meets its backpressure (``WAITING``, the slow-reader
    limit) as it would uncorked. Nothing may await while corked: a write by another path
    (autobahn, a replay's task) could overtake the frames held here."""
    if _cork.parts is None:
        _cork.parts = {}


def uncork() -> int:
    """Send what ``cork`` held, one ``send()`` a socket (the rest through Twisted's buffer,
    as ``write`` does), and stop corking. Returns how many sockets were written."""
    parts, _cork.parts = _cork.parts, None
    if not parts:
        return 0
    for transport, held in parts.items():
        _send(transport, held)
    return len(parts)


def _send(transport: Any, data: bytearray) -> None:
    if not transport.connected or transport.disconnecting:
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        return  # broken: Twisted notices on its next read and closes it
    if sent < len(data):
        transport.write(bytes(data[sent:]))


def send_prepared(protocol: Any, frame: Frame, force: bool = False, kind: str = "message") -> int:
    """Send the frame through autobahn's public ``sendPreparedMessage`` (``WRITE_PATH``
    "autobahn"): framed once per message too, but every write goes through Twisted's buffer
    and a later ``send()``. Returns as ``write`` does."""
    if protocol.state != STATE_OPEN:
        return 0
    if not force and waiting(protocol):
        return WAITING
    protocol.sendPreparedMessage(frame.prepared(protocol.factory))
    return 1


WRITERS = {"socket": write, "autobahn": send_prepared}


class LazyPformat:
    """``pprint.pformat(obj)``, computed only if someone turns it into a string."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __str__(self) -> str:
        import pprint

        return pprint.pformat(self.obj)


class LazyTypeName:
    """``autobahn.util.hltype(obj)``, computed only if someone turns it into a string."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __str__(self) -> str:
        from autobahn.util import hltype

        return hltype(self.obj)


def defer_autobahn_config_log() -> None:
    """autobahn formats for its debug log lines on every new connection, even when debug
    logging is off: its whole configuration pretty-printed (12 % of a connection's set-up
    cost here), and six highlighted type names (``hltype``: inspect calls and string work).
    Give it lazy ones: the same text when those log lines are enabled, no cost otherwise."""
    try:
        from autobahn.twisted import websocket as autobahn_twisted
        from autobahn.websocket import protocol as autobahn_protocol
    except ImportError:
        return
    autobahn_protocol.pformat = LazyPformat
    for module in (autobahn_protocol, autobahn_twisted):
        if hasattr(module, "hltype"):
            module.hltype = LazyTypeName


def share_autobahn_options() -> None:
    """autobahn copies each of its 29 protocol options (``CONFIG_ATTRS``) from the factory
    onto every new protocol that does not have it yet: 29 more entries in every connection's
    ``__dict__``, which then takes a table twice the size (3.3 KB a connection, for its whole
    life). Here each daphne factory builds its protocols from a subclass holding the factory's
    options as class attributes, made at its first connection (daphne sets every option in
    ``Server.run``, before it listens; a later ``setProtocolOptions`` makes a new one): the
    protocols find the options there and copy nothing. Same values, read the same way."""
    try:
        from daphne.ws_protocol import WebSocketFactory
    except ImportError:
        return
    if hasattr(WebSocketFactory.buildProtocol, "__wrapped__"):
        return  # installed already
    build, configure = WebSocketFactory.buildProtocol, WebSocketFactory.setProtocolOptions

    def buildProtocol(self: Any, addr: Any) -> Any:
        if "protocol" not in vars(self):
            base = type(self).protocol
            # staticmethod: read back as is, also an option that is a function
            # (perMessageCompressionAccept), which a plain class attribute would bind.
            options = {name: staticmethod(getattr(self, name)) for name in base.CONFIG_ATTRS}
            self.protocol = type(base.__name__, (base,), options)
        return build(self, addr)

    def setProtocolOptions(self: Any, *args: Any, **kwargs: Any) -> None:
        configure(self, *args, **kwargs)
        vars(self).pop("protocol", None)  # the next connection takes the new options

    buildProtocol.__wrapped__ = build  # type: ignore[attr-defined]
    setProtocolOptions.__wrapped__ = configure  # type: ignore[attr-defined]
    WebSocketFactory.buildProtocol = buildProtocol
    WebSocketFactory.setProtocolOptions = setProtocolOptions
