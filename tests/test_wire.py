"""realtime.wire and realtime.server: every assumption about daphne, Twisted and autobahn
internals that the fast path, the close codes and the HTTP timeout rely on, pinned by a test
that fails when an upgrade breaks it."""

from __future__ import annotations

import asyncio
import struct

import pytest

from realtime import wire
from realtime.server import limit_http_request_time


def test_daphne_gives_applications_a_send_that_leads_to_its_protocol():
    from daphne.server import Server

    seen = {}

    async def app(scope, receive, send):
        seen["send"] = send

    class FakeProtocol:
        transport = object()
        failByDrop = True

    async def run():
        server = Server(application=app, endpoints=["tcp:port=0"])
        protocol = FakeProtocol()
        server.connections = {protocol: {}}
        server.create_application(protocol, {"type": "websocket"})
        await asyncio.sleep(0)
        return protocol

    protocol = asyncio.run(run())
    assert wire.daphne_protocol(seen["send"]) is protocol
    assert protocol.failByDrop is False  # close codes are sent, not a dropped stream


def test_anything_else_is_not_daphne(caplog):
    async def send(message):
        pass

    assert wire.daphne_protocol(send) is None
    assert wire.daphne_protocol(None) is None


def test_autobahn_refuses_application_close_codes_that_the_protocol_needs():
    """Why closes go through ``sendCloseFrame``: ``sendClose`` raises for 1001/1008/1009/1011."""
    from autobahn.twisted.websocket import WebSocketServerProtocol

    protocol = WebSocketServerProtocol()
    protocol.state = WebSocketServerProtocol.STATE_OPEN
    for code in (1001, 1008, 1009, 1011):
        with pytest.raises(Exception, match="invalid close code"):
            protocol.sendClose(code=code)


def test_close_sends_the_exact_code_through_send_close_frame():
    from autobahn.twisted.websocket import WebSocketServerProtocol

    sent = []

    class Probe(WebSocketServerProtocol):
        def sendFrame(self, opcode, payload=b"", **kwargs):
            sent.append((opcode, payload))

    protocol = Probe()
    protocol.state = WebSocketServerProtocol.STATE_OPEN
    protocol.closeHandshakeTimeout = 0
    wire.close(protocol, 1008, "kept breaking the protocol")
    assert sent == [(8, struct.pack("!H", 1008) + b"kept breaking the protocol")]
    assert protocol.state == WebSocketServerProtocol.STATE_CLOSING
    wire.close(protocol, 1011, "again")  # not open any more: nothing more is sent
    assert len(sent) == 1


def test_send_prepared_uses_autobahns_public_prepared_messages_framed_once():
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    sent = []

    class Probe(WebSocketServerProtocol):
        def sendData(self, data, sync=False, chopsize=None):
            sent.append(data)

    factory = WebSocketServerFactory()
    frame = wire.Frame(b'{"type":"message"}')
    protocols = [Probe() for _ in range(3)]
    for protocol in protocols:
        protocol.factory, protocol.state = factory, WebSocketServerProtocol.STATE_OPEN
        protocol._perMessageCompress = None
        assert wire.send_prepared(protocol, frame)
    assert sent == [frame.wire] * 3  # the same bytes as the socket path
    assert frame.prepared(factory) is frame.prepared(factory)
    protocols[0].state = WebSocketServerProtocol.STATE_CLOSING
    assert not wire.send_prepared(protocols[0], frame) and len(sent) == 3


def test_twisted_transport_attributes_the_fast_path_reads():
    from twisted.internet import abstract, tcp

    for name in ("dataBuffer", "offset", "connected", "disconnecting"):
        assert hasattr(abstract.FileDescriptor, name), name
    assert "_tempDataLen" in abstract.FileDescriptor.__init__.__code__.co_names
    assert hasattr(tcp.Server, "getHandle")  # .socket is set on connections


def test_buffered_counts_what_twisted_holds():
    class Transport:
        dataBuffer = b"abcdef"
        offset = 2
        _tempDataLen = 10

    class Protocol:
        transport = Transport()

    assert wire.buffered(Protocol()) == 14


def test_autobahn_still_has_the_log_formatting_this_project_defers():
    from autobahn.twisted import websocket as autobahn_twisted
    from autobahn.util import hltype
    from autobahn.websocket import protocol as autobahn_protocol

    wire.defer_autobahn_config_log()
    assert autobahn_protocol.pformat is wire.LazyPformat
    assert str(wire.LazyPformat({"a": 1})) == "{'a': 1}"
    assert autobahn_protocol.hltype is autobahn_twisted.hltype is wire.LazyTypeName
    method = autobahn_protocol.WebSocketServerProtocol.processHandshake
    assert str(wire.LazyTypeName(method)) == hltype(method)  # the same text when logged


def test_http_request_timeout_reaches_daphnes_twisted_factory():
    from daphne.http_protocol import HTTPFactory

    from realtime.server import head_deadline_channel

    limit_http_request_time(3.5)
    assert HTTPFactory(server=None).timeOut == 3.5
    limit_http_request_time(7.0)  # applied again: replaced, not stacked
    factory = HTTPFactory(server=None)
    assert factory.timeOut == 7.0
    channel = factory.buildProtocol(None)._channel  # Twisted's HTTP/1.1-or-2 wrapper's
    assert type(channel) is head_deadline_channel() and channel.head_seconds == 7.0


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_frame_wire_bytes_follow_rfc6455(size):
    payload = b"x" * size
    data = wire.Frame(payload).wire
    assert data[0] == 0x81  # FIN + text, unmasked
    if size < 126:
        assert data[1] == size and data[2:] == payload
    elif size < 65536:
        assert data[1] == 126 and struct.unpack("!H", data[2:4])[0] == size
        assert data[4:] == payload
    else:
        assert data[1] == 127 and struct.unpack("!Q", data[2:10])[0] == size
        assert data[10:] == payload
    assert wire.Frame(payload).text == payload.decode()


def test_daphne_routes_socket_data_through_the_protocols_instance_attributes():
    """ReadGate wraps methods on the instance: daphne hands the upgraded transport to the
    WebSocket protocol (``transport.protocol``), which Twisted calls by attribute, and
    daphne's protocol queues events on ``application_queue``. The head deadline's channel
    overrides HTTPChannel's methods, which Twisted's factory builds by ``protocol``."""
    import inspect

    from daphne import http_protocol, ws_protocol
    from twisted.internet import protocol, tcp
    from twisted.web import http

    assert "transport.protocol = protocol" in inspect.getsource(http_protocol.WebRequest.process)
    assert "self.protocol.dataReceived" in inspect.getsource(tcp.Connection._dataReceived)
    assert "application_queue.put_nowait" in inspect.getsource(
        ws_protocol.WebSocketProtocol.onMessage
    )
    for name in ("connectionMade", "allHeadersReceived", "requestDone", "connectionLost"):
        assert callable(getattr(http.HTTPChannel, name))
    assert "self.allHeadersReceived()" in inspect.getsource(http.HTTPChannel.lineReceived)
    assert "_GenericHTTPChannelProtocol(HTTPChannel())" in inspect.getsource(
        http._genericHTTPChannelProtocolFactory
    )
    assert "super().buildProtocol(addr)" in inspect.getsource(http.HTTPFactory.buildProtocol)
    assert "self.protocol()" in inspect.getsource(protocol.Factory.buildProtocol)
    assert http.HTTPChannel.totalHeadersSize == 16384


class GateTransport:
    def __init__(self):
        self.reading = True

    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True


class GateProtocol:
    """What ReadGate needs of daphne's protocol: autobahn parses each fed piece into frames
    (here: one frame per 100 bytes) that daphne queues."""

    def __init__(self):
        self.application_queue = asyncio.Queue()
        self.transport = GateTransport()
        self.fed = 0

    def dataReceived(self, data: bytes) -> None:
        self.fed += len(data)
        for _ in range(len(data) // 100):
            self.application_queue.put_nowait({"type": "websocket.receive"})


def test_read_gate_reads_no_faster_than_frames_are_taken():
    protocol = GateProtocol()
    gate = wire.ReadGate(protocol)
    protocol.dataReceived(b"x" * 100)  # a small read goes straight through
    assert protocol.fed == 100 and protocol.transport.reading
    protocol.dataReceived(b"x" * 100_000)  # a flood: fed until 64 frames wait, then kept
    assert protocol.application_queue.qsize() >= wire.ReadGate.MAX_QUEUED
    assert protocol.fed < 100 + 3 * wire.ReadGate.PIECE
    assert not protocol.transport.reading and gate.kept
    queue = protocol.application_queue
    while queue.qsize() >= wire.ReadGate.MAX_QUEUED // 2:  # the application takes frames
        queue.get_nowait()
        gate.taken()
    assert protocol.fed > 100 + wire.ReadGate.PIECE  # read on from where it stopped
    while protocol.fed < 100_100:
        queue.get_nowait()
        gate.taken()
    assert protocol.transport.reading and not gate.kept
    gate.stop()  # closing for abuse: frames are skipped by their headers, never parsed
    from bench.loadgen import client_frame

    fed = protocol.fed
    pings = client_frame('{"type": "ping"}') * 500 + client_frame("x" * 70_000)
    for start in range(0, len(pings), 1000):  # in reads that cut frames anywhere
        protocol.dataReceived(pings[start : start + 1000])
    assert protocol.fed == fed and protocol.transport.reading
    close = bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big")
    protocol.dataReceived(close[:3])
    protocol.dataReceived(close[3:])
    assert protocol.fed == fed + len(close)  # only the client's close reaches autobahn


def test_twisted_request_attributes_write_body_reads_and_its_chunk_framing():
    """``wire.write_body`` mirrors ``Request.write`` once the head is out: the attributes it
    reads exist, and a chunk is framed as Twisted frames it (``http.toChunk``)."""
    from twisted.web import http

    class Transport:
        connected, disconnecting, dataBuffer, _tempDataLen = True, False, b"", 0
        written: list[bytes] = []

        def getPeer(self):  # noqa: N802 (Twisted's name)
            return None

        getHost = getPeer  # noqa: N815

        class socket:  # noqa: N801 (stands for the socket object)
            @staticmethod
            def send(data: bytes) -> int:
                Transport.written.append(data)
                return len(data)

    channel = http.HTTPChannel()
    channel.transport = Transport()
    request = http.Request(channel, queued=False)
    for name in ("finished", "_disconnected", "startedWriting", "sentLength", "chunked"):
        assert hasattr(request, name), name
    assert b"".join(http.toChunk(b"event: x\n\n")) == b"a\r\nevent: x\n\n\r\n"
    request.startedWriting, request.chunked = 1, 1
    assert wire.write_body(request, b"event: x\n\n")
    assert Transport.written == [b"a\r\nevent: x\n\n\r\n"] and request.sentLength == 10
    request.finished = 1
    assert not wire.write_body(request, b"late")


def test_the_upgraded_connection_lets_go_of_its_http_channel_without_the_collector():
    """Twisted's HTTP channel registers itself as its transport's producer, and daphne's
    upgrade leaves it there (the transport only changes protocol); ``forget_http_channel``
    unregisters it and empties it, so the channel and its request go by reference counting."""
    import gc
    import inspect
    import weakref
    from types import SimpleNamespace

    from daphne import http_protocol
    from twisted.internet.testing import StringTransport
    from twisted.web import http

    assert "registerProducer(self, True)" in inspect.getsource(http.HTTPChannel.connectionMade)
    assert "transport.protocol = protocol" in inspect.getsource(http_protocol.WebRequest.process)
    assert "if not self._handlingRequest" in inspect.getsource(http.HTTPChannel.pauseProducing)

    transport = StringTransport()
    channel = http.HTTPChannel()
    channel.makeConnection(transport)
    request = http.Request(channel)
    channel.requests.append(request)  # an upgrade's request never ends: they refer to each other
    assert transport.producer is channel
    gone = weakref.ref(channel)
    upgraded = SimpleNamespace(transport=transport)
    gc.disable()
    try:
        assert wire.forget_http_channel(upgraded) is True
        assert transport.producer is None
        del channel, request
        assert gone() is None  # freed at once, no collection needed
    finally:
        gc.enable()
    assert wire.forget_http_channel(upgraded) is False  # nothing (more) to let go
    assert wire.forget_http_channel(SimpleNamespace(transport=None)) is False


def test_protocols_read_autobahns_options_from_their_class_not_a_copy_each():
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    wire.share_autobahn_options()
    wire.share_autobahn_options()  # once is enough
    assert hasattr(WebSocketFactory.buildProtocol, "__wrapped__")
    factory = WebSocketFactory(object(), server="Daphne")
    factory.setProtocolOptions(openHandshakeTimeout=7, allowNullOrigin=True)
    address = IPv4Address("TCP", "127.0.0.1", 1)

    def connected():
        protocol = factory.buildProtocol(address)
        protocol.makeConnection(StringTransport())
        return protocol

    first, second = connected(), connected()
    assert type(first) is type(second)  # one subclass per factory
    options = type(first).CONFIG_ATTRS
    assert len(options) > 25
    for protocol in (first, second):
        assert not set(options) & set(vars(protocol))  # nothing copied
        assert protocol.openHandshakeTimeout == 7 and protocol.allowNullOrigin is True
        assert protocol.trafficStats is not None  # autobahn's set-up ran
        # An option that is a function is read as the factory's function, not bound.
        assert protocol.perMessageCompressionAccept is factory.perMessageCompressionAccept
    factory.setProtocolOptions(openHandshakeTimeout=3)
    third = connected()
    assert third.openHandshakeTimeout == 3 and first.openHandshakeTimeout == 7


class SocketTransport:
    """What ``wire.write`` and ``wire.uncork`` read of a Twisted TCP transport: its buffer
    fields, its state, and its socket (``accept`` bytes a ``send()`` takes; None = all)."""

    def __init__(self, accept: int | None = None, buffered: bytes = b""):
        self.connected, self.disconnecting = True, False
        self.dataBuffer, self._tempDataLen = buffered, 0
        self.sends: list[bytes] = []  # each send() call's bytes
        self.queued: list[bytes] = []  # what went to Twisted's buffer (transport.write)
        transport = self

        class Socket:
            @staticmethod
            def send(data: bytes) -> int:
                taken = len(data) if accept is None else min(accept, len(data))
                transport.sends.append(data[:taken])
                return taken

        self.socket = Socket()

    def write(self, data: bytes) -> None:
        self.queued.append(data)


def open_protocol(transport: SocketTransport):
    class Protocol:
        state = wire.STATE_OPEN

    protocol = Protocol()
    protocol.transport = transport
    return protocol


def frames(*texts: str) -> list[wire.Frame]:
    return [wire.Frame(text.encode(), text) for text in texts]


def test_corked_frames_leave_joined_in_one_send_per_socket_in_order():
    a, b = SocketTransport(), SocketTransport()
    one, two, three = frames("one", "two", "three")
    wire.cork()
    try:
        for frame in (one, two):
            assert wire.write(open_protocol(a), frame) == 1
            assert wire.write(open_protocol(b), frame) == 1
        assert wire.write(open_protocol(a), three, True, "whisper") == 1
        assert a.sends == b.sends == []  # held until uncork
    finally:
        assert wire.uncork() == 2
    assert a.sends == [one.wire + two.wire + three.wire]
    assert b.sends == [one.wire + two.wire]
    assert wire.uncork() == 0  # not corked any more: nothing held
    assert wire.write(open_protocol(a), one) == 1 and a.sends[-1] == one.wire  # at once


def test_a_corked_socket_that_takes_part_gets_the_rest_through_twisteds_buffer():
    partial, closed = SocketTransport(accept=4), SocketTransport()
    one, two = frames("first frame", "second frame")
    wire.cork()
    for frame in (one, two):
        wire.write(open_protocol(partial), frame)
        wire.write(open_protocol(closed), frame)
    closed.connected = False
    wire.uncork()
    joined = one.wire + two.wire
    assert partial.sends == [joined[:4]] and partial.queued == [joined[4:]]
    assert closed.sends == [] and closed.queued == []  # gone meanwhile: nothing written


def test_a_socket_with_bytes_waiting_is_not_corked_and_keeps_its_backpressure():
    """A reader already behind gets ``WAITING`` (or, forced, Twisted's buffer after what
    waits) while corked, exactly as when not: the cork only joins writes that would have
    been sent at once."""
    slow = SocketTransport(buffered=b"older bytes")
    one, two = frames("one", "two")
    wire.cork()
    try:
        assert wire.write(open_protocol(slow), one) == wire.WAITING
        assert wire.write(open_protocol(slow), two, True) == 1
    finally:
        assert wire.uncork() == 0
    assert slow.sends == [] and slow.queued == [two.wire]


def test_a_corked_socket_is_sent_at_cork_bytes_and_then_meets_its_backpressure(monkeypatch):
    """Held bytes go out once they reach ``CORK_BYTES``; a reader that takes only part of
    them has the rest in Twisted's buffer, so its next frame meets ``WAITING`` (the
    slow-reader rule) within the same corked batch, as it would uncorked."""

    class Buffering(SocketTransport):
        def write(self, data: bytes) -> None:
            super().write(data)
            self.dataBuffer += data  # what Twisted does with what the socket refused

    monkeypatch.setattr(wire, "CORK_BYTES", 100)
    slow = Buffering(accept=70)
    big = frames("x" * 60, "y" * 60, "z" * 60)
    wire.cork()
    try:
        assert wire.write(open_protocol(slow), big[0]) == 1 and slow.sends == []
        assert wire.write(open_protocol(slow), big[1]) == 1  # 124 bytes held: sent now
        joined = big[0].wire + big[1].wire
        assert slow.sends == [joined[:70]] and slow.queued == [joined[70:]]
        assert wire.write(open_protocol(slow), big[2]) == wire.WAITING
    finally:
        assert wire.uncork() == 0  # nothing held any more
