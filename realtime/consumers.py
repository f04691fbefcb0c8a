"""/ws/, the WebSocket door of a ``connection.Connection``: the handshake (subprotocol, Origin,
admission), each client frame vetted (``ratelimit``) and handed to ``on_<type>``. It is the
connection's ``Transport``; daphne's side of the socket is a ``wire.Socket``."""

from __future__ import annotations

import logging
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime import engine, metrics, protocol, wire
from realtime.admission import admission
from realtime.conf import realtime_settings as conf
from realtime.connection import Connection
from realtime.origins import handshake_refusal
from realtime.protocol import ClientFrame, ProtocolError
from realtime.ratelimit import ConnectionLimits, FrameTooBig

logger = logging.getLogger("realtime.consumer")


class RealtimeConsumer(AsyncWebsocketConsumer):
    """A visitor's socket: the handshake and the client's frames; the rest is its connection."""

    connection: Connection | None = None
    socket: wire.Socket | None = None  # under daphne
    write: Any = None  # Transport.write (wire.Socket's, when frames may go straight out)
    bursts = False  # Transport.bursts: frames joined in one write (wire.Socket's socket path)
    address = host = "?"

    @property
    def channel_layer_alias(self) -> str | None:  # type: ignore[override]
        # Topics need no channel layer; without one a connection costs no receive task.
        return conf.CHANNEL_LAYER if conf.CONSUMER_CHANNEL_LAYER else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:  # clean-up, whatever ends the consumer (a disconnect, an error, a cancellation)
            if self.channel_layer_alias is not None:  # two sources: channels' own loop
                await super().__call__(scope, receive, send)
            else:
                await self.serve(scope, receive, send)
        finally:
            self.release()

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        """``AsyncConsumer.__call__`` for one source of events: each awaited in this frame.
        channels' ``await_many_dispatch`` runs every ``receive()`` in a task of its own and
        waits on it with ``asyncio.wait``: a task, futures and three more suspended frames per
        connection for its whole life, and a task per frame received."""
        self.scope, self.channel_layer, self.base_send = scope, None, send
        dispatch = self.dispatch
        try:
            while True:
                await dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:  # no thread hop per message:
        await getattr(self, get_handler_name(message))(message)  # database calls close theirs

    async def connect(self) -> None:
        client = self.scope.get("client") or ("?",)
        self.address, self.host = ":".join(str(p) for p in client), str(client[0])
        refusal = handshake_refusal(self.scope) or admission().refusal(self.host)
        if refusal is not None:
            metrics.REFUSED.labels(refusal.reason).inc()
            logger.info("refused %s: %s", self.address, refusal)
            return await self.close()
        self.limits = ConnectionLimits(conf)
        daphne = wire.daphne_protocol(self.scope.get(wire.SCOPE_KEY))
        if daphne is not None:
            s = self.socket = wire.Socket(daphne, conf.WRITE_PATH if conf.DIRECT_WRITE else None)
            for name in ("write", "bursts", "waiting", "pending", "drop"):  # daphne's way
                setattr(self, name, getattr(s, name))
        hub = engine.hub()
        c = self.connection = Connection.for_scope(self, hub, self.scope, admitted=True)
        hub.connected(c)
        hub.start()
        await self.accept(subprotocol=protocol.PROTOCOL if self.scope.get("subprotocols") else None)
        limits = self.limits.advertised()
        await self.send_frame(
            protocol.WELCOME, protocol.welcome(c.connection_id, c.username, limits, c.user_topic)
        )
        logger.info("connect %s user=%s addr=%s", c.connection_id, c.username, self.address)

    async def disconnect(self, code: int) -> None:
        if (c := self.connection) is not None:
            logger.info("disconnect %s user=%s code=%s", c.connection_id, c.username, code)
        if self.socket is not None:
            self.socket.count_failure()  # a close autobahn made itself (1009) is counted too

    def release(self) -> None:
        if self.connection is not None:
            self.connection.release()  # and its place in admission's count

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.socket is not None:
            self.socket.gate.taken()
        if self.connection is None or self.connection.closing:
            return
        try:
            frame = self.limits.vet(text_data, bytes_data)
            await getattr(self, f"on_{frame.type}")(frame)
        except FrameTooBig as exc:
            await self.close(protocol.CLOSE_TOO_BIG, str(exc))
        except ProtocolError as exc:
            await self.refuse(exc)
        except Exception:
            logger.exception("server error on %s: %.200r", self.connection.connection_id, text_data)
            await self.refuse(protocol.server_error(text_data), abuse=False)

    async def on_ping(self, frame: ClientFrame) -> None:
        await self.send(protocol.pong(id=frame.id))

    async def on_subscribe(self, frame: ClientFrame) -> None:
        if frame.topic not in self.connection.streams:
            self.limits.check_subscriptions(len(self.connection.streams), frame)
        await self.connection.subscribe(str(frame.topic), frame.since, frame.id, frame.presence)

    async def on_unsubscribe(self, frame: ClientFrame) -> None:
        await self.connection.unsubscribe(str(frame.topic), frame.id)

    async def on_publish(self, frame: ClientFrame) -> None:
        self.limits.check_publish(frame)
        await self.connection.publish(str(frame.topic), frame.data, frame.key, frame.id)

    async def on_whisper(self, frame: ClientFrame) -> None:
        self.limits.check_whisper(frame)
        await self.connection.whisper(str(frame.topic), frame.data, frame.id)

    async def refuse(self, exc: ProtocolError, abuse: bool = True) -> None:
        metrics.ERROR_FRAMES.labels(exc.code).inc()
        await self.send(exc.frame())
        if abuse and exc.code != protocol.NOT_FOUND and not self.limits.abuse.take():
            await self.close(protocol.CLOSE_POLICY_VIOLATION, "kept breaking the protocol")

    # --- the connection's Transport (write, waiting, pending, drop: wire.Socket's) ----------------

    async def send_frame(self, kind: str, text: str) -> None:
        # Straight to the socket when it is open (as live frames are), in order with what
        # waits; else (not under daphne, or not open) the ASGI send, which handles the rest.
        # daphne's reply path (autobahn's framing, Twisted's buffer) was a fifth of the time
        # to open and subscribe a connection (bench/connection_profile.py --profile).
        if self.write is not None and (self.connection is None or not self.connection.closing):
            if self.write(wire.Frame(text.encode(), text), True):
                return
        await self.send(text)

    async def send(self, text_data: Any = None, bytes_data: Any = None, close: Any = False):
        # Nothing once the connection ends; a client gone meanwhile ends it quietly.
        if self.connection is None or not self.connection.closing or close:
            try:
                await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
            except Disconnected:
                self.release()

    waiting = staticmethod(lambda: False)  # without daphne (tests' communicators)
    pending = staticmethod(lambda: 0)
    drop = staticmethod(lambda: None)

    async def close(self, code: Any = None, reason: str | None = None) -> None:
        if self.connection is None or code is None:  # a refused handshake
            return await super().close(code=code)
        if self.socket is not None:  # an abusive client's next frames are not even read
            abusive, label = code != protocol.CLOSE_UNAUTHORIZED, self.connection.connection_id
            self.socket.close(code, reason or "", abusive=abusive, label=label)
        elif not self.connection.closing:
            await super().close(code=code)
        self.release()

    def shutdown(self) -> bool:
        return self.socket is not None and self.socket.close(protocol.CLOSE_GOING_AWAY, "shutdown")
