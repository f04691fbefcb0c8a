"""The /ws/ endpoint: one thin consumer implementing the realtime.v1 protocol.

Frame parsing lives in ``protocol``; database reads in the small helpers below; topic frames
arrive from this process's ``engine.Hub`` by a direct call (``deliver``), not through the
channel layer.

Delivery guarantee, per topic (``TopicState``): ``last`` is the last seq sent on this
connection and ``target`` the highest seq known to exist. A frame at or below ``last`` is a
duplicate and dropped; the frame right after ``last`` is sent at once; anything further means
frames were lost, and a catch-up task reads ``last+1 .. target`` from the database. While a
replay or catch-up runs (``busy``), live frames only raise ``target``, so frames are sent in
order from one place at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import DEFAULT_CHANNEL_LAYER
from django.db.models.signals import post_delete, post_save

from realtime import engine, fanout, protocol, wire
from realtime.conf import realtime_settings
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Message, Source, Topic
from realtime.origins import header, origin_allowed
from realtime.outbox import publish
from realtime.protocol import ProtocolError
from realtime.ratelimit import TokenBucket

logger = logging.getLogger("realtime.consumer")

# Replayed and gap-filled messages are read from the database in pages of this size.
PAGE = 500
# How long a subscribe waits for this process's first Redis subscription before replaying.
HUB_READY_TIMEOUT = 5.0


@dataclass(slots=True)
class TopicState:
    """One subscription's delivery position."""

    topic_id: int
    last: int
    target: int
    busy: bool = False


# Topic rows are cached per process for a moment: thousands of visitors subscribing to the
# same topic need one query, not thousands. Saving a topic in this process drops its entry at
# once (signals below); other processes see a change within TOPIC_CACHE_SECONDS. Read access
# to a private topic is always checked against the database.
TOPIC_CACHE_SECONDS = 1.0
TOPIC_CACHE_SIZE = 10_000
_topics: dict[str, tuple[float, Topic]] = {}


def forget_topic(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    if instance is None:
        _topics.clear()
    else:
        _topics.pop(instance.slug, None)


post_save.connect(forget_topic, sender=Topic, dispatch_uid="realtime.forget_topic.save")
post_delete.connect(forget_topic, sender=Topic, dispatch_uid="realtime.forget_topic.delete")


@database_sync_to_async
def fetch_topic(slug: str) -> Topic | None:
    return Topic.objects.filter(slug=slug, enabled=True).first()


@database_sync_to_async
def may_read(topic: Topic, user: Any) -> bool:
    return topic.can_read(user)


async def topic_access(slug: str, user: Any) -> tuple[Topic | None, bool, bool]:
    """(topic or None when missing/disabled, may read, may publish)."""
    now = time.monotonic()
    cached = _topics.get(slug)
    if cached is not None and now - cached[0] < TOPIC_CACHE_SECONDS:
        topic = cached[1]
    else:
        topic = await fetch_topic(slug)
        if topic is None:
            _topics.pop(slug, None)
            return None, False, False
        if len(_topics) >= TOPIC_CACHE_SIZE:
            _topics.clear()
        _topics[slug] = (now, topic)
    readable = (not topic.private) or await may_read(topic, user)
    return topic, readable, readable and topic.visitor_publish


@database_sync_to_async
def latest_seq(topic_id: int) -> int:
    return Topic.objects.filter(pk=topic_id).values_list("last_seq", flat=True).first() or 0


@database_sync_to_async
def read_messages(topic_id: int, after: int, upto: int) -> list[tuple[int, str]]:
    """(seq, frame) of retained messages with after < seq <= upto, in order, one page."""
    rows = (
        Message.objects.filter(topic_id=topic_id, seq__gt=after, seq__lte=upto)
        .select_related("topic")
        .order_by("seq")[:PAGE]
    )
    return [(m.seq, fanout.frame(m)) for m in rows]


@database_sync_to_async
def first_retained_seq(topic_id: int, after: int) -> int | None:
    return (
        Message.objects.filter(topic_id=topic_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )


@database_sync_to_async
def store(topic: Topic, data: Any, user: Any) -> Message:
    return publish(topic, data, source=Source.VISITOR, user=user)


class RealtimeConsumer(AsyncWebsocketConsumer):
    """A visitor's socket: subscriptions, replay, visitor publish, ping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The ordinary channel layer (a channel name, groups) is optional: topics do not need
        # it, and without it a connection costs no layer receive task.
        if not realtime_settings.CONSUMER_CHANNEL_LAYER:
            self.channel_layer_alias = None
        elif self.channel_layer_alias == DEFAULT_CHANNEL_LAYER:
            self.channel_layer_alias = realtime_settings.CHANNEL_LAYER
        self.subscriptions: dict[str, TopicState] = {}
        self.hub: engine.Hub | None = None
        self.wire: Any = None
        self.tasks: set[asyncio.Task] = set()
        self.closing = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Dispatch without channels' per-message thread hop to close old database
        connections: every database helper here is a ``database_sync_to_async`` call, which
        already does that in the database thread, so the hop only cost a thread round trip
        for every frame and connect."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']!r}")
        await handler(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.address = ":".join(str(p) for p in (self.scope.get("client") or ("?",)))
        self.connection_id = uuid.uuid4().hex[:16]
        offered = self.scope.get("subprotocols") or []
        if offered and protocol.PROTOCOL not in offered:
            logger.info(
                "refused %s: subprotocols %r lack %s", self.address, offered, protocol.PROTOCOL
            )
            await self.close()
            return
        origin = header(self.scope, b"origin")
        if not origin_allowed(origin):
            logger.info("refused %s: origin %r not allowed", self.address, origin)
            await self.close()
            return
        conf = realtime_settings
        self.hub = engine.hub()
        client_host = str((self.scope.get("client") or ("?",))[0])
        if not self.hub.connected(self, client_host, conf.MAX_CONNECTIONS_PER_ADDRESS):
            logger.warning(
                "refused %s: already %d connection(s) from this address",
                self.address,
                conf.MAX_CONNECTIONS_PER_ADDRESS,
            )
            await self.close()
            return
        self.client_host = client_host
        self.max_send_buffer = conf.MAX_SEND_BUFFER
        self.max_frame_bytes = conf.MAX_FRAME_BYTES
        self.max_subscriptions = conf.MAX_SUBSCRIPTIONS
        self.publish_bucket = TokenBucket(conf.PUBLISH_RATE_PER_S, conf.PUBLISH_BURST)
        # Bad frames and refusals: ABUSE_BUDGET at once, one more a second; then 1008.
        self.abuse_bucket = TokenBucket(1.0, max(1, conf.ABUSE_BUDGET))
        self.hub.start()
        # daphne's protocol, for direct socket writes of fanned-out frames (see realtime.wire).
        self.wire = (
            wire.daphne_protocol(self.scope.get(wire.SCOPE_KEY)) if conf.DIRECT_WRITE else None
        )
        if self.wire is not None:
            engine.install_shutdown_close()
            # When autobahn fails a connection (a frame over the size limit, a protocol
            # error) it sends the close code (1009...) instead of dropping the TCP stream.
            self.wire.failByDrop = False
        await self.accept(subprotocol=protocol.PROTOCOL if offered else None)
        await self.send(
            text_data=protocol.welcome(
                self.connection_id,
                self.username,
                {
                    "max_frame_bytes": self.max_frame_bytes,
                    "max_subscriptions": self.max_subscriptions,
                    "publish_rate_per_s": conf.PUBLISH_RATE_PER_S,
                },
            )
        )
        logger.info("connect %s user=%s addr=%s", self.connection_id, self.username, self.address)

    @property
    def username(self) -> str | None:
        user = getattr(self, "user", None)
        return user.get_username() if user is not None and user.is_authenticated else None

    async def disconnect(self, code: int) -> None:
        self.closing = True
        for slug in list(self.subscriptions):
            self._leave(slug)
        if self.hub is not None:
            self.hub.disconnected(self, getattr(self, "client_host", "?"))
        for task in list(self.tasks):
            task.cancel()
        logger.info(
            "disconnect %s user=%s addr=%s code=%s",
            getattr(self, "connection_id", "-"),
            self.username,
            getattr(self, "address", "?"),
            code,
        )

    # --- frames from the client -------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            if bytes_data is not None and len(bytes_data) > self.max_frame_bytes:
                await self._close(protocol.CLOSE_TOO_BIG, "binary frame over the limit")
                return
            await self._refuse(
                ProtocolError(
                    protocol.BINARY_UNSUPPORTED, "Binary frames are not supported; send JSON text."
                )
            )
            return
        # A str has at most 4 bytes per character: only encode when it could be too big.
        if len(text_data) * 4 > self.max_frame_bytes and (
            len(text_data.encode("utf-8", "surrogatepass")) > self.max_frame_bytes
        ):
            await self._close(protocol.CLOSE_TOO_BIG, "frame over the limit")
            return
        logger.debug("frame in %s: %.200s", self.connection_id, text_data)
        try:
            frame = protocol.parse(text_data)
            handler = getattr(self, f"on_{frame.type}")
            await handler(frame)
        except ProtocolError as exc:
            await self._refuse(exc)
        except Exception:
            logger.exception("server error on %s serving %.200s", self.connection_id, text_data)
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
        if slug not in self.subscriptions and len(self.subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                protocol.TOO_MANY_SUBSCRIPTIONS,
                f"A connection may hold {self.max_subscriptions} subscriptions; unsubscribe first.",
                id=frame.id,
                topic=slug,
            )
        state = self.subscriptions.get(slug)
        resubscribe = state is not None
        if state is None:
            # Listen first, then read: anything stored after the read arrives from the hub
            # (until then `busy` makes live frames only raise the target).
            state = TopicState(0, last=0, target=0, busy=True)
            self.subscriptions[slug] = state
            hub = self.hub or engine.hub()
            hub.add(slug, self)
            await hub.wait_ready(HUB_READY_TIMEOUT)
        try:
            topic, readable, _ = await topic_access(slug, self.user)
        except Exception:
            if not resubscribe:
                self._leave(slug)
            raise
        if topic is None or not readable:
            self._leave(slug)  # access is checked again on every subscribe
            if topic is None:
                raise ProtocolError(
                    protocol.NOT_FOUND, f"No topic {slug!r}.", id=frame.id, topic=slug
                )
            raise ProtocolError(
                protocol.FORBIDDEN, f"You may not read {slug!r}.", id=frame.id, topic=slug
            )
        if resubscribe:
            # Already subscribed: confirm; nothing already sent is sent again.
            latest = await latest_seq(topic.pk)
            await self.send(text_data=protocol.subscribed(slug, latest, True, id=frame.id))
            self.advance(slug, latest)
            return
        state.topic_id = topic.pk
        latest = await self._latest(hub, slug, topic.pk)
        since = frame.since
        if since is None or since > latest:
            start, recovered = max(0, latest - topic.backlog), False
        else:
            start = since
            first = await first_retained_seq(topic.pk, since) if since < latest else None
            recovered = since == latest or first == since + 1
        state.last = start
        state.target = max(state.target, latest)
        await self.send(text_data=protocol.subscribed(slug, latest, recovered, id=frame.id))
        await self._catch_up(slug, state)
        logger.info(
            "subscribe %s user=%s topic=%s since=%s seq=%s",
            self.connection_id,
            self.username,
            slug,
            since,
            latest,
        )

    async def _latest(self, hub: engine.Hub, slug: str, topic_id: int) -> int:
        """The topic's latest seq: from the hub when it tracks it, else from the database
        (read after listening, so nothing published later can be missed)."""
        head = hub.head(slug)
        if head is not None:
            return head
        epoch = hub.epoch()
        latest = await latest_seq(topic_id)
        hub.seed(slug, latest, epoch)
        return latest

    async def on_unsubscribe(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        self._leave(slug)
        await self.send(text_data=protocol.unsubscribed(slug, id=frame.id))

    async def on_publish(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        if not self.publish_bucket.take():
            raise ProtocolError(
                protocol.RATE_LIMITED,
                f"Publishing is limited to {self.publish_bucket.rate:g} messages a second.",
                id=frame.id,
                topic=slug,
            )
        topic, _, may_publish = await topic_access(slug, self.user)
        if topic is None:
            raise ProtocolError(protocol.NOT_FOUND, f"No topic {slug!r}.", id=frame.id, topic=slug)
        if not may_publish:
            raise ProtocolError(
                protocol.FORBIDDEN, f"You may not publish to {slug!r}.", id=frame.id, topic=slug
            )
        try:
            message = await store(topic, frame.data, self.user)
        except TopicNotFound:
            raise ProtocolError(
                protocol.NOT_FOUND, f"No topic {slug!r}.", id=frame.id, topic=slug
            ) from None
        except InvalidMessage as exc:
            raise ProtocolError(protocol.BAD_REQUEST, str(exc), id=frame.id, topic=slug) from None
        await self.send(text_data=protocol.published(slug, message.seq, id=frame.id))

    # --- from the hub (engine.Subscriber) ---------------------------------------------------

    async def deliver(self, slug: str, seq: int, frame: wire.Frame) -> None:
        """A live frame of ``slug``: send it if it is the next one, else catch up."""
        state = self.subscriptions.get(slug)
        if state is None or seq <= state.last or self.closing:
            return  # not subscribed, or a duplicate
        if state.busy or seq != state.last + 1:
            self.advance(slug, seq)
            return
        state.last = seq
        if seq > state.target:
            state.target = seq
        if self.wire is not None:
            if wire.buffered(self.wire) > self.max_send_buffer:
                self._drop_slow_reader()
                return
            wire.write(self.wire, frame.wire)
        else:
            await self.base_send({"type": "websocket.send", "text": frame.text})

    def advance(self, slug: str, seq: int) -> None:
        """``seq`` exists in ``slug``: fetch what this connection lacks up to it."""
        state = self.subscriptions.get(slug)
        if state is None or self.closing:
            return
        if seq > state.target:
            state.target = seq
        if state.last < state.target and not state.busy:
            state.busy = True
            task = asyncio.get_running_loop().create_task(self._catch_up(slug, state))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    # --- helpers ------------------------------------------------------------------------------

    async def _catch_up(self, slug: str, state: TopicState) -> None:
        """Send ``state.last+1 .. state.target`` from the database, in order (busy meanwhile)."""
        state.busy = True
        try:
            while self.subscriptions.get(slug) is state and state.last < state.target:
                rows = await read_messages(state.topic_id, state.last, state.target)
                if self.subscriptions.get(slug) is not state or self.closing:
                    return
                if not rows:
                    state.last = state.target  # pruned: nothing left to send
                    break
                for seq, frame in rows:
                    if seq > state.last:
                        if self.wire is not None and (
                            wire.buffered(self.wire) > self.max_send_buffer
                        ):
                            self._drop_slow_reader()
                            return
                        state.last = seq
                        await self.base_send({"type": "websocket.send", "text": frame})
        except Exception:
            logger.warning("catch-up of %s on %s failed", slug, self.connection_id, exc_info=True)
            # The next frame or head announcement for the topic tries again.
        finally:
            state.busy = False

    def _drop_slow_reader(self) -> None:
        """The client does not read: drop it before its buffer grows (it resumes with since)."""
        if self.closing:
            return
        self.closing = True
        logger.warning(
            "dropping slow reader %s addr=%s: over %d bytes unsent",
            self.connection_id,
            self.address,
            self.max_send_buffer,
        )
        for slug in list(self.subscriptions):
            self._leave(slug)
        self.wire.dropConnection(abort=True)

    def server_shutdown(self) -> int:
        """The server is stopping: close with 1001 so the client reconnects. Returns 1 if a
        close was sent."""
        if self.wire is None or self.closing:
            return 0
        self.closing = True
        # sendCloseFrame: autobahn's sendClose() only lets applications use 1000 and 3000+.
        self.wire.sendCloseFrame(code=protocol.CLOSE_GOING_AWAY, reasonUtf8=b"server shutting down")
        return 1

    def _leave(self, slug: str) -> None:
        if self.subscriptions.pop(slug, None) is not None and self.hub is not None:
            self.hub.discard(slug, self)

    async def _refuse(self, exc: ProtocolError) -> None:
        logger.debug("refused frame on %s: %s", self.connection_id, exc.code)
        await self.send(text_data=exc.frame())
        if exc.code != protocol.NOT_FOUND and not self.abuse_bucket.take():
            await self._close(protocol.CLOSE_POLICY_VIOLATION, "kept breaking the protocol")

    async def _close(self, code: int, reason: str) -> None:
        logger.info(
            "closing %s addr=%s code=%s: %s", self.connection_id, self.address, code, reason
        )
        await self.close(code=code)
