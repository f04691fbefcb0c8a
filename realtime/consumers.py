"""The /ws/ endpoint: the WebSocket door of a ``connection.Connection``.

The consumer does the handshake (subprotocol, Origin, admission), vets each client frame
(size, budget, shape: ``ratelimit``, ``protocol``) and hands it to ``on_<type>``, which asks
the connection. It is the connection's ``Transport``: frames go out through channels' send,
or straight to daphne's socket; every daphne/Twisted/autobahn internal lives in ``wire``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import engine, metrics, protocol, wire
from realtime.admission import admission
from realtime.conf import realtime_settings as conf
from realtime.connection import Connection
from realtime.origins import Refusal, handshake_refusal
from realtime.protocol import ClientFrame, ProtocolError
from realtime.ratelimit import ConnectionLimits, FrameTooBig

logger = logging.getLogger("realtime.consumer")


class RealtimeConsumer(AsyncWebsocketConsumer):
    """A visitor's socket: the handshake and the client's frames; the rest is its connection."""

    connection: Connection | None = None
    protocol: Any = None  # daphne's protocol object, when under daphne
    gate: wire.ReadGate | None = None
    write: Any = None  # Transport.write: straight to daphne's socket, when it may
    close_counted = admitted = False  # in the closes metric; counted by admission
    address = host = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Topics do not need the channel layer; without it a connection costs no receive task.
        if not conf.CONSUMER_CHANNEL_LAYER:
            self.channel_layer_alias = None
        elif self.channel_layer_alias == "default":
            self.channel_layer_alias = conf.CHANNEL_LAYER

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:  # clean-up, whatever ends the consumer (a disconnect, an error, a cancellation)
            await super().__call__(scope, receive, send)
        finally:
            self.release()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # No per-message thread hop to close database connections: every database helper is
        # a database_sync_to_async call, which does that.
        await getattr(self, get_handler_name(message))(message)

    async def connect(self) -> None:
        client = self.scope.get("client") or ("?",)
        self.address, self.host = ":".join(str(p) for p in client), str(client[0])
        refusal, limit = handshake_refusal(self.scope), conf.MAX_CONNECTIONS_PER_ADDRESS
        if refusal is None and not admission().admit(self.host, limit):
            refusal = Refusal("address_limit", f"already {limit} connection(s) from its address")
        if refusal is not None:
            metrics.REFUSED.labels(refusal.reason).inc()
            logger.info("refused %s: %s", self.address, refusal)
            return await self.close()
        self.admitted, self.limits = True, ConnectionLimits(conf)
        self.protocol = wire.daphne_protocol(self.scope.get(wire.SCOPE_KEY))
        if self.protocol is not None:
            self.gate = wire.ReadGate(self.protocol)  # frames read as fast as handled
            self.waiting = functools.partial(wire.waiting, self.protocol)
            if conf.DIRECT_WRITE:
                self.write = functools.partial(wire.WRITERS[conf.WRITE_PATH], self.protocol)
        cookie = self.scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
        hub = engine.hub()
        c = self.connection = Connection(
            self, hub, user=self.scope.get("user"), session_key=cookie, address=self.address
        )
        hub.connected(c)
        hub.start()
        await self.accept(subprotocol=protocol.PROTOCOL if self.scope.get("subprotocols") else None)
        await self.send(protocol.welcome(c.connection_id, c.username, self.limits.advertised()))
        logger.info("connect %s user=%s addr=%s", c.connection_id, c.username, self.address)

    async def disconnect(self, code: int) -> None:
        if (c := self.connection) is not None:
            logger.info("disconnect %s user=%s code=%s", c.connection_id, c.username, code)
        failed = wire.failure_code(self.protocol)
        if failed is not None and not self.close_counted:  # closed by autobahn itself (1009)
            self.close_counted = True
            metrics.CLOSES.labels(str(failed)).inc()

    def release(self) -> None:
        if self.connection is not None:
            self.connection.release()
        if self.admitted:
            self.admitted = False
            admission().leave(self.host)

    # --- frames from the client ---------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.gate is not None:
            self.gate.taken()
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
        await self.connection.subscribe(str(frame.topic), frame.since, frame.id)

    async def on_unsubscribe(self, frame: ClientFrame) -> None:
        await self.connection.unsubscribe(str(frame.topic), frame.id)

    async def on_publish(self, frame: ClientFrame) -> None:
        self.limits.check_publish(frame)
        await self.connection.publish(str(frame.topic), frame.data, frame.key, frame.id)

    async def refuse(self, exc: ProtocolError, abuse: bool = True) -> None:
        metrics.ERROR_FRAMES.labels(exc.code).inc()
        await self.send(exc.frame())
        if abuse and exc.code != protocol.NOT_FOUND and not self.limits.abuse.take():
            await self.close(protocol.CLOSE_POLICY_VIOLATION, "kept breaking the protocol")

    # --- the connection's Transport -------------------------------------------------------------

    async def send_frame(self, kind: str, text: str) -> None:
        await self.send(text)

    async def send(self, text_data: Any = None, bytes_data: Any = None, close: Any = False):
        """channels' send; nothing once the connection ends, and a client gone meanwhile
        (autobahn's ``Disconnected``) ends it quietly."""
        if self.connection is None or not self.connection.closing or close:
            try:
                await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
            except Disconnected:
                self.release()

    def waiting(self) -> bool:
        return False  # replaced by wire.waiting under daphne

    def pending(self) -> int:
        return wire.buffered(self.protocol) if self.protocol is not None else 0

    async def close(self, code: Any = None, reason: str | None = None) -> None:
        """Close with ``code`` through daphne's protocol object (autobahn refuses 1008, 1009
        and 1011 from applications); without one, channels' close (a refused handshake)."""
        if code is None or self.connection is None:
            return await super().close(code=code)
        if self.connection.closing:
            return
        logger.info("closing %s code=%s: %s", self.connection.connection_id, code, reason)
        metrics.CLOSES.labels(str(code)).inc()
        self.close_counted = True
        if self.gate is not None and code != protocol.CLOSE_UNAUTHORIZED:
            self.gate.stop()  # what an abusive client sends after this is not even read
        if self.protocol is not None:
            wire.close(self.protocol, code, reason or "")
        else:
            await super().close(code=code)
        self.release()

    def shutdown(self) -> bool:
        if self.protocol is not None:
            wire.close(self.protocol, protocol.CLOSE_GOING_AWAY, "server shutting down")
        return self.protocol is not None

    def drop(self) -> None:
        if self.protocol is not None:
            wire.drop(self.protocol)
