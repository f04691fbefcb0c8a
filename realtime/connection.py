"""One client's connection, whatever carries it.

A ``Connection`` holds who the client is and what it asks (subscribe, unsubscribe, publish),
re-checks its access when the hub hands it an access change, and ends it. Its topic streams
(replay, gap fill, dedupe, slow readers, state topics: the hub's subscriber for each topic)
are a ``streams.TopicStreams`` it owns. It meets the outside only through a ``Transport``:
the WebSocket consumer (``consumers.py``) and the Server-Sent Events stream (``sse.py``) each
implement one, and a test can implement one in memory (``tests/test_connection.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from realtime import access, families, idempotency, keys, members, payload, protocol, topics
from realtime.admission import admission
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Source
from realtime.outbox import publish
from realtime.protocol import ProtocolError
from realtime.server import connection_closed
from realtime.streams import TopicStreams

logger = logging.getLogger("realtime.consumer")

HUB_READY_TIMEOUT = 5.0  # a subscribe waits this long for the process's Redis subscription


class Transport(Protocol):
    """What a connection needs of the door it came through."""

    # Writes a prebuilt frame now, or None when the transport has no such path (the hub then
    # awaits ``TopicStreams.deliver``). ``write(frame, force=False, kind="message")`` returns
    # 1 (written, or queued behind waiting bytes with ``force``), 0 (not open) or
    # ``wire.WAITING`` (bytes already wait for the client: nothing written unless ``force``);
    # ``kind`` is the frame's type (a socket ignores it; an event stream names its event).
    write: Callable[..., int] | None
    # Whether ``write`` takes a ``wire.Burst`` (several frames in one write; a replay's).
    bursts: bool

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
    """A client: its identity, its requests and its end; the hub tells it of access changes
    and of the shutdown (its ``TopicStreams`` get the topics' frames)."""

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
        self.topics = TopicStreams(
            transport, hub, f"{self.connection_id} addr={address}", self.release
        )
        self.streams = self.topics.streams  # by topic slug
        self.topics.owner = self.connection_id
        self.user_topic = families.user_topic(user)
        self.rules: dict[tuple[str, str], bool] = {}  # rule answers, until access changes
        self.member: dict[str, Any] | None = None  # in presence (None: anonymous, or unknown)
        self.member_known = False
        self.tasks: set[asyncio.Task] | None = None  # made at the first (most hold none)
        self.closing = False
        self.admitted_host: str | None = None  # its place in admission's count, if any

    @classmethod
    def for_scope(
        cls, transport: Transport, hub: Any, scope: dict[str, Any], *, admitted: bool, **kw: Any
    ) -> Connection:
        """The connection of an ASGI request: its user, session cookie and client address;
        ``admitted``: it holds a place in its address's admission count (given back by
        ``release``)."""
        cookie = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
        client = scope.get("client") or ("?",)
        found = cls(
            transport,
            hub,
            user=scope.get("user"),
            session_key=cookie,
            address=":".join(str(part) for part in client),
            **kw,
        )
        found.admitted_host = str(client[0]) if admitted else None
        return found

    @property
    def username(self) -> str | None:
        return self.user.get_username() if self.user_id is not None else None

    # --- what the client asks -----------------------------------------------------------------

    async def subscribe(
        self, slug: str, since: int | None = None, id: Any = None, presence: bool = False
    ) -> None:
        """Start (or confirm) a subscription; raises ``ProtocolError`` for the client.
        ``presence``: also send who is here, then every change."""
        resubscribe = slug in self.streams
        # Access first: a refused subscribe never reaches Redis (a visitor trying keys).
        found = await topics.access(slug, self.user, cache=self.rules)
        if found.topic is None:
            self.topics.leave(slug)  # access is checked again on every subscribe
            raise not_found(slug, id)
        stream = self.streams.get(slug)
        if stream is None:
            resubscribe = False
            # Listen first, then read the seq: anything stored after the read arrives from
            # the hub (until then the new stream is busy, and live frames only raise its
            # target).
            stream = self.topics.listen(slug)
            await self.hub.wait_topic(slug, HUB_READY_TIMEOUT)
        if resubscribe:
            # Already subscribed: confirm; nothing already sent is sent again.
            latest = await topics.latest_seq(found.topic.pk)
            await self.send(protocol.SUBSCRIBED, protocol.subscribed(slug, latest, True, id=id))
            self.topics.advance(slug, latest)
        else:
            latest, recovered = await self.topics.place(slug, stream, found.topic, since)
            await self.topics.announce(slug, stream, latest, recovered, id)
        await self._presence(slug, found.topic, presence, resubscribe, id)

    async def _presence(
        self, slug: str, topic: Any, listen: bool, resubscribe: bool, id: Any, quiet: bool = False
    ) -> None:
        """Join the topic's presence when its rules say so; with ``listen`` send who is here
        (``forbidden`` for the flag when presence is not allowed, unless ``quiet``: the
        subscription stays)."""
        declared = topic.declared_family
        enabled = declared.presence if declared is not None else topic.presence
        allowed = enabled and await topics.rule(topic, "presence", self.user, self.rules)
        if slug not in self.streams or self.closing:
            return
        if allowed and not resubscribe:
            if not self.member_known:
                self.member = await database_sync_to_async(members.member_of)(self.user)
                self.member_known = True
            if slug not in self.streams or self.closing:
                return
            self.hub.roster.track(slug, self.topics, self.member)
        if listen and not allowed and not quiet:
            await self.send(
                protocol.ERROR,
                protocol.error(
                    protocol.FORBIDDEN,
                    f"Presence is not available on {slug!r}; you are subscribed without it.",
                    id=id,
                    topic=slug,
                ),
            )
        elif listen:
            await self.hub.roster.listen(slug, self.topics)

    async def whisper(self, slug: str, data: Any, id: Any = None) -> None:
        """Send ``data`` to the topic's other current subscribers, on every process: not
        stored, at most once, no answer unless refused."""
        await self._allowed(slug, "whisper", id)
        problem = payload.problem(data)
        if problem is not None:
            raise ProtocolError(protocol.BAD_REQUEST, problem, id=id, topic=slug)
        name = self.member["name"] if self.member else (self.username or "")
        text = protocol.whisper(slug, {"user": self.user_id, "name": name}, data)
        await self.hub.roster.signal(slug, keys.whisper_event(self.connection_id, text))

    async def _allowed(self, slug: str, action: str, id: Any) -> Any:
        """The topic, when this user may read it and do ``action`` (publish, whisper) on it;
        else the ``ProtocolError`` to answer (``not_found`` / ``forbidden``)."""
        found = await topics.access(slug, self.user, cache=self.rules)
        if found.topic is None:
            raise not_found(slug, id)
        if not await topics.rule(found.topic, action, self.user, self.rules):
            message = f"You may not {action} {'to' if action == 'publish' else 'on'} {slug!r}."
            raise ProtocolError(protocol.FORBIDDEN, message, id=id, topic=slug)
        return found.topic

    async def unsubscribe(self, slug: str, id: Any = None) -> None:
        self.topics.leave(slug)
        await self.send(protocol.UNSUBSCRIBED, protocol.unsubscribed(slug, id=id))

    async def publish(self, slug: str, data: Any, key: str | None, id: Any = None) -> None:
        """A visitor's publish: stored (or found, for a key used before), then ``published``."""
        topic = await self._allowed(slug, "publish", id)
        try:
            seq = await store(topic, data, self.user, self.scope, key)
        except TopicNotFound:
            raise not_found(slug, id) from None
        except InvalidMessage as exc:  # KeyReused too
            raise ProtocolError(protocol.BAD_REQUEST, str(exc), id=id, topic=slug) from None
        await self.send(protocol.PUBLISHED, protocol.published(slug, seq, id=id))

    async def open_all(
        self, found: dict[str, Any], cursor: dict[str, int], presence: bool = False
    ) -> None:
        """Subscribe to several topics at once (an event stream): every topic is placed before
        anything is sent, so every event's cursor holds every topic."""
        streams = {slug: self.topics.listen(slug) for slug in found}
        await asyncio.gather(*(self.hub.wait_topic(s, HUB_READY_TIMEOUT) for s in streams))
        placed = {}
        for slug, topic in found.items():
            placed[slug] = await self.topics.place(slug, streams[slug], topic, cursor.get(slug))
        for slug, (latest, recovered) in placed.items():
            await self.topics.announce(slug, self.streams[slug], latest, recovered)
        for slug, topic in found.items():
            await self._presence(slug, topic, presence, False, None, quiet=True)

    # --- from the hub (engine.Client) -----------------------------------------------------------

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
                self.rules.clear()
            for slug in slugs:
                for action in ("read", "publish", "whisper", "presence"):
                    self.rules.pop((slug, action), None)  # the rules are asked again
                if slug not in self.streams or self.closing:
                    continue
                found = await topics.access(slug, self.user, cache=self.rules)
                if found.topic is None and slug in self.streams:
                    self.topics.leave(slug)
                    text = protocol.unsubscribed(slug, code=found.refusal)
                    await self.send(protocol.UNSUBSCRIBED, text)
                    logger.info("access to %s ended on %s", slug, self.connection_id)
        except Exception:
            logger.exception("re-checking access of %s failed", self.connection_id)

    # --- sending ------------------------------------------------------------------------------

    async def send(self, kind: str, text: str) -> None:
        if not self.closing:
            await self.transport.send_frame(kind, text)

    # --- the end ------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def release(self) -> None:
        """Leave every topic and the hub, cancel every task; idempotent."""
        if self.closing:
            return
        self.closing = True
        connection_closed()  # a full collection may free what it held (server.tune_gc)
        self.topics.close()
        self.hub.disconnected(self)
        if self.admitted_host is not None:
            admission().leave(self.admitted_host)
        for task in list(self.tasks or ()):
            task.cancel()
