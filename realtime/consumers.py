"""The /ws/ endpoint: one thin consumer implementing the realtime.v1 protocol.

Frame parsing lives in ``protocol``, the per-topic delivery state machine in ``delivery``, topic
lookups and the read rule in ``topics``, revocation in ``access``, socket writes and closes
under daphne in ``wire``. Topic frames arrive from this process's ``engine.Hub`` by a direct
call (``deliver``), not through the channel layer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import access, engine, idempotency, metrics, protocol, topics, wire
from realtime.conf import realtime_settings
from realtime.delivery import Stream
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Source, Topic
from realtime.origins import Refusal, handshake_refusal
from realtime.outbox import publish
from realtime.protocol import ProtocolError
from realtime.ratelimit import ConnectionLimits
from realtime.streams import StreamsMixin
from realtime.topics import latest_seq

logger = logging.getLogger("realtime.consumer")

HUB_READY_TIMEOUT = 5.0  # a subscribe waits this long for the process's Redis subscription


@database_sync_to_async
def store(topic: Topic, data: Any, user: Any, scope: str, key: str | None) -> int:
    """Store a visitor's message; its seq (the first one's, for a key used before)."""
    return publish(topic, data, source=Source.VISITOR, user=user, key=key, scope=scope).seq


def not_found(slug: str, frame: protocol.ClientFrame) -> ProtocolError:
    # Private topics the user may not read answer exactly like missing ones.
    return ProtocolError(protocol.NOT_FOUND, f"No topic {slug!r}.", id=frame.id, topic=slug)


class RealtimeConsumer(StreamsMixin, access.RevocationMixin, AsyncWebsocketConsumer):
    """A visitor's socket: subscriptions, replay, visitor publish, ping."""

    hub: engine.Hub | None = None
    protocol: Any = None  # daphne's protocol object, when under daphne
    direct: Any = None  # the same, when fanned-out frames are written straight to it
    closing = False
    close_counted = False  # in the closes metric
    gate: wire.ReadGate | None = None
    counted = False  # in the hub's per-address count
    user: Any = None
    user_id: Any = None
    session_key: str | None = None  # the session that authenticated user_id
    address = "?"
    host = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Topics do not need the channel layer; without it a connection costs no receive task.
        if not realtime_settings.CONSUMER_CHANNEL_LAYER:
            self.channel_layer_alias = None
        elif self.channel_layer_alias == "default":
            self.channel_layer_alias = realtime_settings.CHANNEL_LAYER
        self.streams: dict[str, Stream] = {}
        self.tasks: set[asyncio.Task] = set()
        self.connection_id = uuid.uuid4().hex[:16]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Clean-up runs whatever ends the consumer: a disconnect, an exception, a cancellation
        # by daphne, or a close the server sent itself.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._clean_up()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Dispatch without channels' per-message thread hop to close old database
        connections: every database helper here is a ``database_sync_to_async`` call, which
        already does that in the database thread."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']!r}")
        await handler(message)

    # --- the handshake ------------------------------------------------------------------------

    async def connect(self) -> None:
        client = self.scope.get("client") or ("?",)
        self.address = ":".join(str(p) for p in client)
        self.host = str(client[0])
        refusal = handshake_refusal(self.scope)
        conf = realtime_settings
        self.hub = engine.hub()
        if refusal is None and not self.hub.connected(
            self, self.host, conf.MAX_CONNECTIONS_PER_ADDRESS
        ):
            refusal = Refusal(
                "address_limit",
                f"already {conf.MAX_CONNECTIONS_PER_ADDRESS} connection(s) from its address",
            )
        if refusal is not None:
            metrics.REFUSED.labels(refusal.reason).inc()
            logger.info("refused %s: %s", self.address, refusal)
            await self.close()
            return
        self.counted = True
        self.user = self.scope.get("user")
        if self.user is not None and self.user.is_authenticated:
            self.user_id = self.user.pk
            self.session_key = self.scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
        self.limits = ConnectionLimits(conf)
        self.max_send_buffer = self.limits.send_buffer
        self.hub.start()
        self.protocol = wire.daphne_protocol(self.scope.get(wire.SCOPE_KEY))
        self.direct = self.protocol if conf.DIRECT_WRITE else None
        if self.protocol is not None:
            self.gate = wire.ReadGate(self.protocol)  # frames read as fast as handled
        self.write = wire.WRITERS[conf.WRITE_PATH]
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=protocol.PROTOCOL if subprotocols else None)
        welcome = protocol.welcome(self.connection_id, self.username, self.limits.advertised())
        await self.send(text_data=welcome)
        logger.info("connect %s user=%s addr=%s", self.connection_id, self.username, self.address)

    @property
    def username(self) -> str | None:
        user = self.user
        return user.get_username() if user is not None and user.is_authenticated else None

    async def disconnect(self, code: int) -> None:
        args = (self.connection_id, self.username, self.address, code)
        logger.info("disconnect %s user=%s addr=%s code=%s", *args)
        failed = wire.failure_code(self.protocol)
        if failed is not None and not self.close_counted:
            # Closed by daphne/autobahn itself (1009 for a frame over the size limit).
            self.close_counted = True
            metrics.CLOSES.labels(str(failed)).inc()

    def _clean_up(self) -> None:
        """Leave every topic and the hub's connection count; idempotent."""
        self._release()

    # --- frames from the client ---------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.gate is not None:
            self.gate.taken()
        if self.closing:
            return
        if text_data is None:
            if bytes_data is not None and len(bytes_data) > self.limits.frame_bytes:
                await self._close(protocol.CLOSE_TOO_BIG, "binary frame over the limit")
                return
            await self._refuse(
                ProtocolError(protocol.BINARY_UNSUPPORTED, "Send JSON text, not binary frames.")
            )
            return
        if self.limits.too_big(text_data):
            await self._close(protocol.CLOSE_TOO_BIG, "frame over the limit")
            return
        logger.debug("frame in %s: %.200s", self.connection_id, text_data)
        try:
            self.limits.check_frame(text_data)
            frame = protocol.parse(text_data)
            await getattr(self, f"on_{frame.type}")(frame)
        except ProtocolError as exc:
            await self._refuse(exc)
        except Exception:
            logger.exception("server error on %s serving %.200r", self.connection_id, text_data)
            metrics.ERROR_FRAMES.labels(protocol.SERVER_ERROR).inc()
            await self.send(
                text_data=protocol.error(
                    protocol.SERVER_ERROR,
                    "The server could not serve this frame; try again later.",
                    id=protocol.frame_id(text_data),
                )
            )

    async def on_ping(self, frame: protocol.ClientFrame) -> None:
        await self.send(text_data=protocol.pong(id=frame.id))

    async def on_subscribe(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        if slug not in self.streams:
            self.limits.check_subscriptions(len(self.streams), frame)
        stream = self.streams.get(slug)
        resubscribe = stream is not None
        hub = self.hub or engine.hub()
        if stream is None:
            # Listen first, then read: anything stored after the read arrives from the hub
            # (until then the new stream is busy, and live frames only raise its target).
            stream = self.streams[slug] = Stream()
            hub.add(slug, self)
            await hub.wait_ready(HUB_READY_TIMEOUT)
        try:
            found = await topics.access(slug, self.user)
        except Exception:
            if not resubscribe:
                self._leave(slug)
            raise
        if found.topic is None:
            self._leave(slug)  # access is checked again on every subscribe
            raise not_found(slug, frame)
        topic = found.topic
        if resubscribe:
            # Already subscribed: confirm; nothing already sent is sent again.
            latest = await latest_seq(topic.pk)
            await self.send(text_data=protocol.subscribed(slug, latest, True, id=frame.id))
            self.advance(slug, latest)
            return
        await self._open(slug, stream, topic, frame, hub)

    async def on_unsubscribe(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        self._leave(slug)
        await self.send(text_data=protocol.unsubscribed(slug, id=frame.id))

    async def on_publish(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        self.limits.check_publish(frame)
        found = await topics.access(slug, self.user)
        if found.topic is None:
            raise not_found(slug, frame)
        if not found.may_publish:
            raise ProtocolError(
                protocol.FORBIDDEN, f"You may not publish to {slug!r}.", id=frame.id, topic=slug
            )
        try:
            scope = idempotency.scope_of(
                self.user, self.scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
            )
            seq = await store(found.topic, frame.data, self.user, scope, frame.key)
        except TopicNotFound:
            raise not_found(slug, frame) from None
        except InvalidMessage as exc:
            raise ProtocolError(protocol.BAD_REQUEST, str(exc), id=frame.id, topic=slug) from None
        await self.send(text_data=protocol.published(slug, seq, id=frame.id))

    # --- from the hub (engine.Subscriber) -----------------------------------------------------

    def server_shutdown(self) -> int:
        """The server is stopping: close with 1001 so the client reconnects. Returns 1 if a
        close was sent."""
        if self.protocol is None or self.closing:
            return 0
        wire.close(self.protocol, protocol.CLOSE_GOING_AWAY, "server shutting down")
        self._clean_up()
        return 1

    # --- helpers ------------------------------------------------------------------------------

    async def send(self, text_data: str | None = None, bytes_data: Any = None, close: Any = False):
        """channels' send, except that a client gone while it was answered (autobahn raises
        ``Disconnected``: the socket closed between the frame's arrival and the answer) ends
        the connection quietly instead of with a traceback and a second failing send."""
        if self.closing and not close:
            return
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            logger.debug("%s closed before an answer could be sent", self.connection_id)
            self._clean_up()

    async def _refuse(self, exc: ProtocolError) -> None:
        logger.debug("refused frame on %s: %s", self.connection_id, exc.code)
        metrics.ERROR_FRAMES.labels(exc.code).inc()
        await self.send(text_data=exc.frame())
        if exc.code != protocol.NOT_FOUND and not self.limits.abuse.take():
            await self._close(protocol.CLOSE_POLICY_VIOLATION, "kept breaking the protocol")

    async def _close(self, code: int, reason: str) -> None:
        """Close with ``code``. Under daphne through its protocol object: autobahn refuses
        application close codes other than 1000 and 3000-4999 (1008, 1009, 1011 would turn
        into an error and a 1011)."""
        if self.closing:
            return
        logger.info(
            "closing %s addr=%s code=%s: %s", self.connection_id, self.address, code, reason
        )
        metrics.CLOSES.labels(str(code)).inc()
        self.close_counted = True
        if self.gate is not None:
            self.gate.stop()  # what the client sends after this is not even read
        if self.protocol is not None:
            wire.close(self.protocol, code, reason)
        else:
            await self.close(code=code)
        self._clean_up()
