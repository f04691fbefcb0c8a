"""``Connection`` (and the ``TopicStreams`` it owns) through an in-memory ``Transport`` and an
in-memory hub: no server, no Redis subscription. The port is proved: everything a socket or an
event stream does with topics (subscribe, replay, live frames, dedupe, gap fill, the
slow-reader rule, paced replay, revocation, publishing) works against this fake door."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from realtime import protocol, streams
from realtime.connection import Connection
from realtime.models import Topic
from realtime.outbox import publish
from realtime.protocol import ProtocolError
from realtime.wire import WAITING, Frame

pytestmark = pytest.mark.django_db(transaction=True)


class MemoryTransport:
    """A door that keeps what it is given. ``fast``: frames may be written at once (like a
    socket under daphne); ``backlog``: bytes the client has not read, drained by ``drain``
    bytes at each look (the client reading)."""

    def __init__(self, *, fast: bool = True, backlog: int = 0, drain: int = 0):
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.backlog, self.drain = backlog, drain
        self.closed: tuple[int, str] | None = None
        self.dropped = self.shut = False
        self.write = self._write if fast else None

    def _write(self, frame: Frame, force: bool = False, kind: str = protocol.MESSAGE) -> int:
        if self.backlog and not force:
            return WAITING  # like a socket with bytes waiting: the caller decides
        self.sent.append((kind, json.loads(frame.payload)))
        return 1

    async def send_frame(self, kind: str, text: str) -> None:
        self.sent.append((kind, json.loads(text)))

    def waiting(self) -> bool:
        return self.backlog > 0

    def pending(self) -> int:
        self.backlog = max(0, self.backlog - self.drain)
        return self.backlog

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def shutdown(self) -> bool:
        self.shut = True
        return True

    def drop(self) -> None:
        self.dropped = True

    def seqs(self, topic: str) -> list[int]:
        return [f["seq"] for k, f in self.sent if k == protocol.MESSAGE and f["topic"] == topic]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.sent]


class MemoryHub:
    """What a connection asks of the hub, without Redis: always subscribed, heads unknown."""

    def __init__(self):
        self.topics: dict[str, set] = {}
        self.connections: set = set()

    def add(self, slug, subscriber):
        self.topics.setdefault(slug, set()).add(subscriber)

    def discard(self, slug, subscriber):
        self.topics.get(slug, set()).discard(subscriber)

    def connected(self, subscriber):
        self.connections.add(subscriber)

    def disconnected(self, subscriber):
        self.connections.discard(subscriber)

    async def wait_ready(self, timeout):
        return True

    async def wait_topic(self, slug, timeout):
        return True

    def head(self, slug):
        return None

    def epoch(self):
        return None

    def seed(self, slug, seq, epoch):
        pass


@database_sync_to_async
def topic(slug: str = "news", n: int = 0, **fields: Any) -> Topic:
    made = Topic.objects.create(slug=slug, title=slug, **fields)
    for i in range(n):
        publish(made, {"n": i + 1})
    return made


def live(slug: str, seq: int) -> Frame:
    text = protocol.encode({"type": "message", "topic": slug, "seq": seq, "data": seq})
    return Frame(text.encode(), text)


async def settle(c: Connection) -> None:
    """Wait for the connection's background work (a fetch, a re-check; a task that ended the
    connection is cancelled by it)."""
    await asyncio.gather(*(c.tasks or ()), *(c.topics.tasks or ()), return_exceptions=True)


def open_connection(transport: MemoryTransport, user: Any = None, **kw: Any) -> Connection:
    hub = MemoryHub()
    found = Connection(transport, hub, user=user, **kw)
    hub.connected(found)
    return found


async def test_subscribe_answers_subscribed_then_the_backlog():
    await topic("news", 12, backlog=5)
    transport = MemoryTransport()
    c = open_connection(transport)
    await c.subscribe("news", id=7)
    kind, answer = transport.sent[0]
    assert (kind, answer["seq"], answer["recovered"], answer["id"]) == ("subscribed", 12, False, 7)
    assert transport.seqs("news") == [8, 9, 10, 11, 12]


async def test_resume_with_since_sends_what_follows_over_a_slow_door_too():
    await topic("news", 6)
    transport = MemoryTransport(fast=False)  # no direct write: every frame is a send
    c = open_connection(transport)
    await c.subscribe("news", since=3)
    assert transport.sent[0][1]["recovered"] is True
    assert transport.seqs("news") == [4, 5, 6]


async def test_live_frames_in_order_duplicates_dropped_gaps_filled_from_the_database():
    made = await topic("news", 2)
    transport = MemoryTransport()
    c = open_connection(transport)
    await c.subscribe("news", since=2)
    assert c.topics.push("news", 2, live("news", 2)) == 0  # already had it
    await database_sync_to_async(publish)(made, "three")
    assert c.topics.push("news", 3, live("news", 3)) == 1
    assert c.topics.push("news", 3, live("news", 3)) == 0  # a duplicate
    for _ in range(2):
        await database_sync_to_async(publish)(made, "more")
    assert c.topics.push("news", 5, live("news", 5)) == 0  # 4 was lost: fetched, then 5
    await settle(c)
    assert transport.seqs("news") == [3, 4, 5]


async def test_a_door_without_direct_writes_goes_through_deliver():
    await topic("news", 1)
    transport = MemoryTransport(fast=False)
    c = open_connection(transport)
    await c.subscribe("news", since=1)
    assert c.topics.push("news", 2, live("news", 2)) == -1
    assert await c.topics.deliver("news", 2, live("news", 2)) is True
    assert transport.seqs("news") == [2]


async def test_a_live_reader_over_the_buffer_limit_is_dropped(settings):
    settings.REALTIME = {"MAX_SEND_BUFFER": 1000}
    await topic("news")
    transport = MemoryTransport()
    c = open_connection(transport)
    await c.subscribe("news")
    transport.backlog = 5000  # the client stopped reading
    assert c.topics.push("news", 1, live("news", 1)) == 0
    assert transport.dropped and c.closing and not c.hub.connections


async def test_a_replay_waits_for_the_client_to_read_and_then_goes_on():
    await topic("bulk", 30, retention=1000)
    # 300 KB wait; the client reads 20 KB at each look: the replay pauses, then finishes.
    transport = MemoryTransport(backlog=300_000, drain=20_000)
    c = open_connection(transport)
    await c.subscribe("bulk", since=0)
    assert transport.seqs("bulk") == list(range(1, 31))
    assert not transport.dropped and transport.backlog <= streams.REPLAY_LOW_WATER


async def test_a_replay_to_a_client_that_never_reads_is_dropped(settings):
    settings.REALTIME = {"SEND_STALL_TIMEOUT": 0.05}
    await topic("bulk", 30, retention=1000)
    transport = MemoryTransport(backlog=300_000, drain=0)
    c = open_connection(transport)
    await c.subscribe("bulk", since=0)
    assert transport.dropped and c.closing and transport.seqs("bulk") == []


async def test_open_all_places_every_topic_before_sending_anything():
    found = {"a": await topic("a", 3), "b": await topic("b", 2, backlog=0)}
    transport = MemoryTransport(fast=False)
    c = open_connection(transport)
    seen_streams = []
    send = transport.send_frame

    async def watching(kind, text):
        seen_streams.append(sorted(c.streams))
        await send(kind, text)

    transport.send_frame = watching
    await c.open_all(found, {"a": 1})
    assert all(streams == ["a", "b"] for streams in seen_streams)
    assert transport.seqs("a") == [2, 3] and transport.seqs("b") == []


async def test_an_ended_session_closes_with_4401():
    await topic("news")
    user = await database_sync_to_async(User.objects.create_user)("ann", password="pw-123456")
    transport = MemoryTransport()
    c = open_connection(transport, user, session_key="no-such-session")
    await c.subscribe("news")
    c.access_changed({"users": [user.pk]})
    await settle(c)
    assert transport.closed == (4401, "the session ended") and c.closing


async def test_a_lost_topic_is_unsubscribed_with_a_code():
    made = await topic("news")
    transport = MemoryTransport()
    c = open_connection(transport)
    await c.subscribe("news")
    made.enabled = False
    await database_sync_to_async(made.save)()
    c.access_changed({"topics": ["news"]})
    await settle(c)
    assert transport.sent[-1] == (
        "unsubscribed",
        {"type": "unsubscribed", "topic": "news", "code": "not_found"},
    )
    assert "news" not in c.streams and not c.closing


async def test_publish_stores_and_answers_and_refuses_what_the_rule_refuses():
    await topic("chat", visitor_publish=True)
    await topic("news")
    transport = MemoryTransport()
    c = open_connection(transport)
    await c.publish("chat", {"text": "hi"}, key="k", id=1)
    assert transport.sent[-1] == (
        "published",
        {"type": "published", "topic": "chat", "seq": 1, "id": 1},
    )
    with pytest.raises(ProtocolError) as refused:
        await c.publish("news", 1, key=None, id=2)
    assert refused.value.code == "forbidden"
    with pytest.raises(ProtocolError) as reused:
        await c.publish("news", 1, key="k", id=3)
    assert reused.value.code == "forbidden"  # the rule is asked before the key
    with pytest.raises(ProtocolError) as missing:
        await c.publish("nope", 1, key=None, id=4)
    assert missing.value.code == "not_found"


async def test_a_released_connection_counts_once_as_closed_for_the_collector():
    """``release`` tells ``server.PacedFullCollections`` that old garbage may exist now."""
    from realtime.server import connections_closed

    c = open_connection(MemoryTransport())
    before = connections_closed()
    c.release()
    c.release()  # idempotent: counted once
    assert connections_closed() == before + 1


async def test_server_shutdown_ends_through_the_door_once():
    transport = MemoryTransport()
    c = open_connection(transport)
    assert c.server_shutdown() == 1 and transport.shut and c.closing
    assert c.server_shutdown() == 0
