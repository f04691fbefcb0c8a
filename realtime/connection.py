"""One client's connection, whatever carries it: the ``engine.Subscriber`` of the hub.

A ``Connection`` holds who the client is, its topic streams (subscribe, replay and gap fill
from the database, dedupe, the slow-reader rule, state topics), the revocation re-check and
publishing. It meets the outside only through a ``Transport``: the WebSocket consumer
(``consumers.py``) and the Server-Sent Events stream (``sse.py``) each implement one, and a
test can implement one in memory. The per-topic decisions are ``delivery.Stream``'s.

Replay is paced by what the transport drains: rows are written while fewer than
``REPLAY_HIGH_WATER`` bytes wait, then the replay waits until at most ``REPLAY_LOW_WATER``
wait; a client whose backlog does not shrink for ``SEND_STALL_TIMEOUT`` seconds is dropped.
Live frames are judged by ``MAX_SEND_BUFFER``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from channels.db import database_sync_to_async

from realtime import access, idempotency, metrics, protocol, topics
from realtime.conf import realtime_settings
from realtime.delivery import FETCH, SEND, Stream
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Source
from realtime.outbox import publish
from realtime.protocol import ProtocolError
from realtime.wire import Frame

logger = logging.getLogger("realtime.consumer")

STATE_DRAIN_POLL = 0.01  # seconds between checks of a socket holding back a state frame
REPLAY_HIGH_WATER = 256 * 1024
REPLAY_LOW_WATER = 64 * 1024
DRAIN_POLL = 0.005
HUB_READY_TIMEOUT = 5.0  # a subscribe waits this long for the process's Redis subscription


class Transport(Protocol):
    """What a connection needs of the door it came through."""

    # Writes a prebuilt frame now (True: written; False: not open), or None when the
    # transport has no such path (the hub then awaits ``Connection.deliver``).
    write: Callable[[Frame], bool] | None

    async def send_frame(self, kind: str, text: str) -> None:
        """Send a server frame of type ``kind`` (its JSON ``text``), in order."""

    def waiting(self) -> bool:
        """Whether any written byte still waits for the client (cheap)."""

    def pending(self) -> int:
        """How many written bytes wait for the client (0 when it cannot tell)."""

    async def close(self, code: int, reason: str) -> None:
        """End the connection with a close code (4401: the session ended)."""

    def shutdown(self) -> bool:
        """The server is stopping: end with 1001 at once; False when already ending."""

    def drop(self) -> None:
        """Cut the connection at once (a client that does not read)."""


@database_sync_to_async
def store(topic: Any, data: Any, user: Any, scope: str, key: str | None) -> int:
    """Store a visitor's message; its seq (the first one's, for a key used before)."""
    return publish(topic, data, source=Source.VISITOR, user=user, key=key, scope=scope).seq


def not_found(slug: str, id: Any) -> ProtocolError:
    # Private topics the user may not read answer exactly like missing ones.
    return ProtocolError(protocol.NOT_FOUND, f"No topic {slug!r}.", id=id, topic=slug)


class Connection:
    """A client's topics and identity; the hub's subscriber."""

    def __init__(
        self,
        transport: Transport,
        hub: Any,
        *,
        user: Any = None,
        session_key: str | None = None,
        address: str = "?",
        connection_id: str | None = None,
    ):
        self.transport = transport
        self.hub = hub
        self.connection_id = connection_id or uuid.uuid4().hex[:16]
        self.address = address
        self.user = user
        signed_in = user is not None and user.is_authenticated
        self.user_id = user.pk if signed_in else None
        # The session that authenticated user_id (None for anonymous visitors).
        self.session_key = session_key if signed_in else None
        self.scope = idempotency.scope_of(user, session_key)  # of publish keys
        self.streams: dict[str, Stream] = {}
        self.tasks: set[asyncio.Task] = set()
        self.closing = False
        self.max_send_buffer = realtime_settings.MAX_SEND_BUFFER
        self._write = transport.write
        self._waiting = transport.waiting

    @property
    def username(self) -> str | None:
        return self.user.get_username() if self.user_id is not None else None

    # --- what the client asks -----------------------------------------------------------------

    async def subscribe(self, slug: str, since: int | None = None, id: Any = None) -> None:
        """Start (or confirm) a subscription; raises ``ProtocolError`` for the client."""
        stream = self.streams.get(slug)
        resubscribe = stream is not None
        if stream is None:
            # Listen first, then read: anything stored after the read arrives from the hub
            # (until then the new stream is busy, and live frames only raise its target).
            stream = self.streams[slug] = Stream()
            self.hub.add(slug, self)
            await self.hub.wait_ready(HUB_READY_TIMEOUT)
        try:
            found = await topics.access(slug, self.user)
        except Exception:
            if not resubscribe:
                self._leave(slug)
            raise
        if found.topic is None:
            self._leave(slug)  # access is checked again on every subscribe
            raise not_found(slug, id)
        if resubscribe:
            # Already subscribed: confirm; nothing already sent is sent again.
            latest = await topics.latest_seq(found.topic.pk)
            await self.send(protocol.SUBSCRIBED, protocol.subscribed(slug, latest, True, id=id))
            self.advance(slug, latest)
            return
        latest, recovered = await self.place(slug, stream, found.topic, since)
        await self.announce(slug, stream, latest, recovered, id)

    async def unsubscribe(self, slug: str, id: Any = None) -> None:
        self._leave(slug)
        await self.send(protocol.UNSUBSCRIBED, protocol.unsubscribed(slug, id=id))

    async def publish(self, slug: str, data: Any, key: str | None, id: Any = None) -> None:
        """A visitor's publish: stored (or found, for a key used before), then ``published``."""
        found = await topics.access(slug, self.user)
        if found.topic is None:
            raise not_found(slug, id)
        if not await topics.may_publish(found.topic, self.user):
            raise ProtocolError(
                protocol.FORBIDDEN, f"You may not publish to {slug!r}.", id=id, topic=slug
            )
        try:
            seq = await store(found.topic, data, self.user, self.scope, key)
        except TopicNotFound:
            raise not_found(slug, id) from None
        except InvalidMessage as exc:  # KeyReused too
            raise ProtocolError(protocol.BAD_REQUEST, str(exc), id=id, topic=slug) from None
        await self.send(protocol.PUBLISHED, protocol.published(slug, seq, id=id))

    async def open_all(self, found: dict[str, Any], cursor: dict[str, int]) -> None:
        """Subscribe to several topics at once (an event stream): every topic is placed before
        anything is sent, so every event's cursor holds every topic."""
        placed = {}
        for slug, topic in found.items():
            stream = self.streams[slug] = Stream()
            self.hub.add(slug, self)
            placed[slug] = await self.place(slug, stream, topic, cursor.get(slug))
        for slug, (latest, recovered) in placed.items():
            await self.announce(slug, self.streams[slug], latest, recovered)

    # --- placing a stream ---------------------------------------------------------------------

    async def place(
        self, slug: str, stream: Stream, topic: Any, since: int | None
    ) -> tuple[int, bool]:
        """Set a new subscription's starting position (already listening; nothing sent):
        return the topic's latest seq and ``recovered``."""
        stream.topic_id = topic.pk
        stream.state = topic.is_state
        latest = await self._latest(slug, topic.pk, since)
        recovered = stream.start(since, latest, topic.backlog)
        if recovered is None:
            recovered = await topics.first_retained_seq(topic.pk, stream.last) == stream.last + 1
        return latest, recovered

    async def announce(
        self, slug: str, stream: Stream, latest: int, recovered: bool, id: Any = None
    ) -> None:
        """Answer ``subscribed`` for a placed stream, then send what it owes."""
        await self.send(protocol.SUBSCRIBED, protocol.subscribed(slug, latest, recovered, id=id))
        logger.info("subscribe %s topic=%s seq=%s", self.connection_id, slug, latest)
        await self._catch_up(slug, stream)

    async def _latest(self, slug: str, topic_id: int, since: int | None) -> int:
        """The topic's latest seq: from the hub when it tracks it, else from the database
        (read after listening, so nothing published later can be missed). A ``since`` beyond
        the hub's head may come from a client of another process that saw a message this
        one has not received yet: the database decides."""
        head = self.hub.head(slug)
        if head is not None and (since is None or since <= head):
            return head
        epoch = self.hub.epoch()
        latest = await topics.latest_seq(topic_id)
        self.hub.seed(slug, latest, epoch)
        return latest

    # --- from the hub (engine.Subscriber) -----------------------------------------------------

    def push(self, slug: str, seq: int, frame: Frame) -> int:
        """The hub's fast path, without a coroutine per connection: 1 when the frame was
        written, 0 when not (a duplicate, waiting for a fetch, a slow reader dropped), -1
        when it must go through ``deliver`` (a transport without ``write``)."""
        write = self._write
        if write is None:
            return -1
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return 0
        verdict = stream.offer(seq)
        if verdict == SEND:
            if self._waiting():  # only a socket with bytes waiting can be over the limit
                if stream.state:
                    # Behind on a state topic: hold the newest frame until the socket drains.
                    self._hold_state(slug, stream, frame)
                    return 0
                if self.transport.pending() > self.max_send_buffer:
                    self._drop_slow_reader()
                    return 0
            return 1 if write(frame) else 0
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return 0

    async def deliver(self, slug: str, seq: int, frame: Frame) -> bool:
        """A live frame of ``slug``: send it if it is the next one, else catch up. True when
        the frame was sent."""
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return False
        verdict = stream.offer(seq)
        if verdict == SEND:
            if self.transport.pending() > self.max_send_buffer:
                self._drop_slow_reader()
                return False
            await self.transport.send_frame(protocol.MESSAGE, frame.text)
            return not self.closing
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return False

    def advance(self, slug: str, seq: int) -> None:
        """``seq`` exists in ``slug``: fetch what this connection lacks up to it."""
        stream = self.streams.get(slug)
        if stream is not None and not self.closing and stream.learn(seq):
            self._spawn(self._catch_up(slug, stream))

    def server_shutdown(self) -> int:
        """The server is stopping: the transport ends with 1001. 1 if it did."""
        if self.closing or not self.transport.shutdown():
            return 0
        self.release()
        return 1

    def access_changed(self, event: dict[str, Any]) -> None:
        """Someone's access may have ended: re-check this connection if it is concerned."""
        for slug in event.get("topics", ()):
            topics.drop(slug)  # the row changed: read it again
        session, slugs = access.concerns(event, self.user_id, self.session_key, self.streams)
        if (session or slugs) and not self.closing:
            self._spawn(self._recheck(session, slugs))

    async def _recheck(self, session: bool, slugs: list[str]) -> None:
        """Close with 4401 when the session no longer authenticates the user; else leave the
        topics it may no longer read (``unsubscribed`` with a code)."""
        try:
            if session:
                user = await access.current_user(self.session_key, self.user_id)
                if user is None:
                    await self.transport.close(protocol.CLOSE_UNAUTHORIZED, "the session ended")
                    self.release()
                    return
                self.user = user
            for slug in slugs:
                if slug not in self.streams or self.closing:
                    continue
                found = await topics.access(slug, self.user)
                if found.topic is None and slug in self.streams:
                    self._leave(slug)
                    text = protocol.unsubscribed(slug, code=found.refusal)
                    await self.send(protocol.UNSUBSCRIBED, text)
                    logger.info("access to %s ended on %s", slug, self.connection_id)
        except Exception:
            logger.exception("re-checking access of %s failed", self.connection_id)

    # --- sending ------------------------------------------------------------------------------

    async def send(self, kind: str, text: str) -> None:
        if not self.closing:
            await self.transport.send_frame(kind, text)

    def _hold_state(self, slug: str, stream: Stream, frame: Frame) -> None:
        """Keep only the newest frame of a state topic while the socket has bytes waiting;
        one task sends it once they are gone (frames in between are never sent)."""
        starting = stream.pending is None
        stream.pending = frame
        if starting:
            self._spawn(self._send_held_state(slug, stream))

    async def _send_held_state(self, slug: str, stream: Stream) -> None:
        while self.streams.get(slug) is stream and not self.closing:
            await asyncio.sleep(STATE_DRAIN_POLL)
            if not self._waiting():
                frame, stream.pending = stream.pending, None
                if frame is not None:
                    self._write(frame)
                return
            if self.transport.pending() > self.max_send_buffer:
                stream.pending = None
                self._drop_slow_reader()
                return
        stream.pending = None

    async def _catch_up(self, slug: str, stream: Stream) -> None:
        """Send ``stream.last+1 .. stream.target`` from the database, in order, paced by what
        the transport drains; a client that reads at any speed catches up however large the
        backlog, one that stops reading is dropped."""
        stream.busy = True
        try:
            while self.streams.get(slug) is stream and stream.owed:
                rows = await topics.read_page(stream.topic_id, stream.fetch_after, stream.target)
                if self.streams.get(slug) is not stream or self.closing:
                    return
                if not rows:
                    stream.skip_to_target()  # pruned: nothing left to send
                    break
                for seq, text in rows:
                    if self.transport.pending() > REPLAY_HIGH_WATER:
                        if not await self._drained() or self.streams.get(slug) is not stream:
                            return
                    if stream.sent(seq):
                        if self._write is not None:
                            self._write(Frame(text.encode(), text))
                        else:
                            await self.send(protocol.MESSAGE, text)
                        metrics.local.replayed += 1
        except Exception:
            logger.warning("catch-up of %s on %s failed", slug, self.connection_id, exc_info=True)
            # The next frame or head announcement for the topic tries again.
        finally:
            stream.busy = False

    async def _drained(self) -> bool:
        """Wait until at most ``REPLAY_LOW_WATER`` bytes wait for the client. A client whose
        backlog does not shrink for ``SEND_STALL_TIMEOUT`` seconds does not read: it is
        dropped (False). True when drained (and still open)."""
        loop = asyncio.get_running_loop()
        stall = realtime_settings.SEND_STALL_TIMEOUT
        lowest, since = self.transport.pending(), loop.time()
        while not self.closing:
            pending = self.transport.pending()
            if pending <= REPLAY_LOW_WATER:
                return True
            now = loop.time()
            if pending < lowest:
                lowest, since = pending, now
            elif now - since > stall:
                self._drop_slow_reader()
                return False
            await asyncio.sleep(DRAIN_POLL)
        return False

    def _drop_slow_reader(self) -> None:
        """The client does not read: drop it before its buffer grows (it resumes with since)."""
        if not self.closing:
            metrics.SLOW_READERS.inc()
            logger.warning(
                "dropping slow reader %s addr=%s: %d bytes unsent",
                self.connection_id,
                self.address,
                self.transport.pending(),
            )
            self.transport.drop()
            self.release()

    # --- the end ------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _leave(self, slug: str) -> None:
        if self.streams.pop(slug, None) is not None:
            self.hub.discard(slug, self)

    def release(self) -> None:
        """Leave every topic and the hub, cancel every task; idempotent."""
        if self.closing:
            return
        self.closing = True
        for slug in list(self.streams):
            self._leave(slug)
        self.hub.disconnected(self)
        for task in list(self.tasks):
            task.cancel()
