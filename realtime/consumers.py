"""The /ws/ endpoint: one thin consumer implementing the realtime.v1 protocol.

Frame parsing lives in ``protocol``; database reads in the small helpers below; the channel
layer is only joined and left here (``fanout`` is the only sender).

Delivery guarantee: ``self.subscriptions[topic]`` is the last seq sent on this connection.
An event at or below it is a duplicate and dropped; an event beyond the next seq means the
layer lost something, and the gap is filled from the database before the event is sent.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime import fanout, protocol
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


@database_sync_to_async
def topic_access(slug: str, user: Any) -> tuple[Topic | None, bool, bool]:
    """(topic or None when missing/disabled, may read, may publish)."""
    topic = Topic.objects.filter(slug=slug, enabled=True).first()
    if topic is None:
        return None, False, False
    readable = topic.can_read(user)
    return topic, readable, readable and topic.visitor_publish


@database_sync_to_async
def read_messages(topic_id: int, after: int, upto: int) -> list[tuple[int, str]]:
    """(seq, frame) of retained messages with after < seq <= upto, in order."""
    rows = (
        Message.objects.filter(topic_id=topic_id, seq__gt=after, seq__lte=upto)
        .select_related("topic")
        .order_by("seq")[:PAGE]
    )
    return [(m.seq, fanout.message_event(m)["frame"]) for m in rows]


@database_sync_to_async
def first_retained_seq(topic_id: int, after: int) -> int | None:
    return (
        Message.objects.filter(topic_id=topic_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )


@database_sync_to_async
def topic_id_for(slug: str) -> int | None:
    return Topic.objects.filter(slug=slug).values_list("id", flat=True).first()


@database_sync_to_async
def store(topic: Topic, data: Any, user: Any) -> Message:
    return publish(topic, data, source=Source.VISITOR, user=user)


class RealtimeConsumer(AsyncWebsocketConsumer):
    """A visitor's socket: subscriptions, replay, visitor publish, ping."""

    async def connect(self) -> None:
        self.subscriptions: dict[str, int] = {}
        self.topic_ids: dict[str, int] = {}
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
        self.max_frame_bytes = conf.MAX_FRAME_BYTES
        self.max_subscriptions = conf.MAX_SUBSCRIPTIONS
        self.publish_bucket = TokenBucket(conf.PUBLISH_RATE_PER_S, conf.PUBLISH_BURST)
        # Bad frames and refusals: ABUSE_BUDGET at once, one more a second; then 1008.
        self.abuse_bucket = TokenBucket(1.0, max(1, conf.ABUSE_BUDGET))
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
        user = self.user
        return user.get_username() if user is not None and user.is_authenticated else None

    async def disconnect(self, code: int) -> None:
        for slug in list(self.subscriptions):
            await self._leave(slug)
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
        topic, readable, _ = await topic_access(slug, self.user)
        if topic is None:
            if slug in self.subscriptions:
                await self._leave(slug)
            raise ProtocolError(protocol.NOT_FOUND, f"No topic {slug!r}.", id=frame.id, topic=slug)
        if not readable:
            if slug in self.subscriptions:
                await self._leave(slug)
            raise ProtocolError(
                protocol.FORBIDDEN, f"You may not read {slug!r}.", id=frame.id, topic=slug
            )
        if slug in self.subscriptions:
            # Already subscribed: confirm; nothing already sent is sent again.
            await self.send(text_data=protocol.subscribed(slug, topic.last_seq, True, id=frame.id))
            await self._catch_up(slug, topic.last_seq)
            return
        # Join first, then read: anything stored after the read arrives as an event.
        await self._join(slug)
        self.topic_ids[slug] = topic.pk
        latest = topic.last_seq
        since = frame.since
        if since is None or since > latest:
            start, recovered = max(0, latest - topic.backlog), False
        else:
            start = since
            first = await first_retained_seq(topic.pk, since) if since < latest else None
            recovered = since == latest or first == since + 1
        self.subscriptions[slug] = start
        await self.send(text_data=protocol.subscribed(slug, latest, recovered, id=frame.id))
        await self._catch_up(slug, latest)
        self.subscriptions[slug] = max(self.subscriptions[slug], latest)
        logger.info(
            "subscribe %s user=%s topic=%s since=%s seq=%s",
            self.connection_id,
            self.username,
            slug,
            since,
            latest,
        )

    async def on_unsubscribe(self, frame: protocol.ClientFrame) -> None:
        slug = str(frame.topic)
        if slug in self.subscriptions:
            await self._leave(slug)
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

    # --- events from the channel layer (sent only by realtime.fanout) -----------------------

    async def realtime_message(self, event: dict[str, Any]) -> None:
        slug, seq = event["topic"], event["seq"]
        last = self.subscriptions.get(slug)
        if last is None or seq <= last:
            return  # not subscribed (a stale membership), or a duplicate
        if seq > last + 1:
            await self._catch_up(slug, seq - 1)
            if seq <= self.subscriptions[slug]:
                return
        await self.send(text_data=event["frame"])
        self.subscriptions[slug] = seq

    # --- helpers ------------------------------------------------------------------------------

    async def _catch_up(self, slug: str, upto: int) -> None:
        """Send retained messages after the last one sent, up to ``upto``, from the database."""
        topic_id = self.topic_ids.get(slug) or await topic_id_for(slug)
        while self.subscriptions.get(slug, upto) < upto:
            after = self.subscriptions[slug]
            rows = await read_messages(topic_id, after, upto)
            if not rows:
                self.subscriptions[slug] = upto  # pruned: nothing left to send
                return
            for _seq, frame in rows:
                await self.send(text_data=frame)
            self.subscriptions[slug] = rows[-1][0]

    async def _join(self, slug: str) -> None:
        await self.channel_layer.group_add(fanout.group_name(slug), self.channel_name)

    async def _leave(self, slug: str) -> None:
        self.subscriptions.pop(slug, None)
        self.topic_ids.pop(slug, None)
        try:
            await self.channel_layer.group_discard(fanout.group_name(slug), self.channel_name)
        except Exception:
            logger.warning("could not leave %s on %s", slug, self.connection_id, exc_info=True)

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
