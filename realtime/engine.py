"""The fan-out engine: one Redis subscription per process, direct delivery to local sockets.

The Channels tutorial design (each consumer joins a group; ``group_send``; the layer queues an
event per consumer; each consumer's task dispatches it) costs a Redis round trip, a queue and a
task wake-up *per connection and message*. Here each process (event loop) holds one ``Hub``:
one Redis pub/sub connection SUBSCRIBEd to the channels of the topics its own connections
hold, and a map topic → local subscribers. A message is one PUBLISH; each process that holds
the topic receives it once and hands the pre-serialised frame to its local subscribers with a
direct call; a process that does not hold it never reads it (thousands of topics per object
with a few subscribers each cost each process only its share). Subscribes and unsubscribes are
batched into one command; a topic is kept ``LINGER`` seconds after its last local subscriber
leaves, so a page reload does not churn Redis. Every Redis *write* of messages lives in
``realtime.fanout``; presence and whispers (``realtime.members``) ride the same per-topic
channels.

Redis pub/sub keeps nothing: while the hub is disconnected it misses messages. On every
(re)subscribe it therefore *resyncs*: re-subscribes every held topic, reads each one's latest
seq from the database and tells every local subscriber, which fills what it missed from the
database. Heads announced by the scheduler (``HEADS`` channel) repair a lost *last* message the
same way; access changes missed while away are repaired by re-checking every signed-in
connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
import weakref
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from realtime import cluster, keys, metrics, wire
from realtime.aio import raise_if_cancelled
from realtime.subscriptions import TopicChannels
from realtime.wire import Frame

logger = logging.getLogger("realtime.engine")

RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0
DISPATCH_BATCH = 64  # messages already read from Redis delivered together (corked writes)


class Subscriber(Protocol):
    """What the hub needs of a local subscriber to a topic (``streams.TopicStreams``)."""

    def push(self, slug: str, seq: int, frame: Frame) -> int:
        """Write the frame now if it is the connection's next one: 1 written, 0 not, -1 to
        go through ``deliver`` instead."""
        ...

    async def deliver(self, slug: str, seq: int, frame: Frame) -> bool:
        """Send the frame if it is the connection's next one; True when written."""

    def advance(self, slug: str, seq: int) -> None: ...

    def whisper(self, slug: str, frame: Frame, sender: str) -> None:
        """A whisper of ``slug`` from connection ``sender`` (not sent back to it)."""


class Client(Protocol):
    """What the hub needs of a local connection (``connection.Connection``)."""

    def access_changed(self, event: dict[str, Any]) -> None: ...

    def server_shutdown(self) -> int: ...


class Hub:
    """One per event loop: a Redis pub/sub reader and the local subscribers by topic.

    Its one job is the subscription and the dispatch to local subscribers. What it needs from
    elsewhere is handed in: ``read_heads`` (slugs → latest seqs, from the database, run in a
    thread, for the resync) and ``companions`` (coroutines run beside the reader while the
    hub runs: ``presence.report`` writes presence, stats and gauges).
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        read_heads: Callable[[list[str]], dict[str, int]] | None = None,
        companions: tuple[Callable[[Hub], Coroutine[Any, Any, None]], ...] = (),
    ):
        self.url = url
        self.prefix = prefix
        self.read_heads = read_heads
        self.companions = companions
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.topics: dict[str, set[Subscriber]] = {}
        self.connections: set[Client] = set()  # every local connection
        self.ready = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.companion_tasks: list[asyncio.Task] = []
        self.subscribes = 0  # successful (re)subscriptions to Redis
        self.delivered = 0  # frames written by the live fan-out (the admin's status page)
        # Latest seq per topic, kept from the stream once seeded from the database while
        # subscribed (``seed``); cleared whenever the subscription is re-established.
        self.heads: dict[str, int] = {}
        self._topic_prefix = keys.topic_channel(prefix, "")
        self._heads = keys.heads_channel(prefix).encode()
        self._access = keys.access_channel(prefix).encode()
        self.channels = TopicChannels()  # which topic channels Redis sends this hub
        self.channel_messages = 0  # topic messages read from Redis (each hub reads its share)
        from realtime.members import Roster  # presence: who is here, per topic

        self.roster = Roster(self)
        self.presence_dirty = True  # the counts changed since presence last wrote them
        # The watchdog of the pub/sub connection (seconds): poll, ping when quiet, give up.
        self.poll_every, self.ping_after, self.silent_limit = 5.0, 15.0, 30.0

    # -- local subscribers

    def add(self, slug: str, subscriber: Subscriber) -> None:
        subscribers = self.topics.get(slug)
        if subscribers is None:
            subscribers = self.topics[slug] = set()
            self.channels.hold(slug)
        subscribers.add(subscriber)
        self.presence_dirty = True
        self.start()

    def discard(self, slug: str, subscriber: Subscriber) -> None:
        subscribers = self.topics.get(slug)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.topics[slug]
                self.channels.release(slug)
            self.presence_dirty = True
        self.roster.drop(slug, subscriber)

    async def wait_topic(self, slug: str, timeout: float) -> bool:
        """Wait until Redis confirmed the subscription to ``slug``'s channel (True): from
        then on every message of the topic reaches this hub. False after ``timeout``."""
        self.start()
        if self.ready.is_set() and slug in self.channels.confirmed:
            return True
        return await self.channels.wait(slug, timeout)

    def connected(self, client: Client) -> None:
        """A local connection opened (told of access changes and of the shutdown)."""
        self.connections.add(client)
        self.presence_dirty = True

    def disconnected(self, client: Client) -> None:
        if client in self.connections:
            self.connections.discard(client)
            self.presence_dirty = True

    def head(self, slug: str) -> int | None:
        """The topic's latest seq, when this hub knows it for sure."""
        if self.ready.is_set() and slug in self.channels.confirmed:
            return self.heads.get(slug)
        return None

    def epoch(self) -> int | None:
        """Identifies the current Redis subscription (None while there is none)."""
        return self.subscribes if self.ready.is_set() else None

    def seed(self, slug: str, seq: int, epoch: int | None) -> None:
        """Record ``seq`` as read from the database while subscription ``epoch`` was active:
        every later message of the topic reaches this hub, so it can keep the head current."""
        if epoch is not None and epoch == self.epoch() and slug in self.channels.confirmed:
            if seq > self.heads.get(slug, -1):
                self.heads[slug] = seq

    def counts(self) -> dict[str, int]:
        """Local subscribers by topic, and ``_connections`` (not a slug: slugs start with a
        letter or digit)."""
        counts = {slug: len(subs) for slug, subs in self.topics.items()}
        counts["_connections"] = len(self.connections)
        return counts

    def report_gauges(self) -> None:
        """Push this hub's figures to the metrics (its connections, subscriptions, state)."""
        metrics.hub_gauges(
            self.id,
            len(self.connections),
            sum(len(s) for s in self.topics.values()),
            self.ready.is_set(),
        )

    def stats(self) -> dict[str, Any]:
        """This hub's figures for the admin's status page."""
        return {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "connections": len(self.connections),
            "subscriptions": sum(len(s) for s in self.topics.values()),
            "frames": self.delivered,
            "channels": len(self.channels.confirmed),
            "read": self.channel_messages,
            "state": "subscribed" if self.ready.is_set() else "resyncing",
        }

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the pub/sub subscription is active (True), or give up (False)."""
        self.start()
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # -- the reader

    def start(self) -> None:
        if self.task is None or self.task.done():
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self._run(), name="realtime-hub")
            self.companion_tasks = [loop.create_task(run(self)) for run in self.companions]

    async def stop(self, timeout: float = 2.0) -> None:
        """Cancel the reader and its companions (waiting at most ``timeout`` for them)."""
        tasks = [t for t in (self.task, *self.companion_tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.ready.clear()
        metrics.hub_gone(self.id)

    def _channel(self, slug: str) -> bytes:
        return (self._topic_prefix + slug).encode()

    def _confirmed(self, slug: str) -> None:
        if self.channels.confirm(slug) and slug in self.topics and self.read_heads is not None:
            # Confirmed again without a new batch: redis-py reconnected by itself; what was
            # published meanwhile is read from the database.
            asyncio.get_running_loop().create_task(self.resync([slug]))

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        while True:
            raise_if_cancelled()
            pubsub, closables = cluster.open_pubsub(self.url, (self._heads, self._access))
            manager: asyncio.Task | None = None
            try:
                # Every held topic, then heads, then access: Redis confirms in order, so the
                # access confirmation means every channel of this batch is active.
                held = self.channels.held(self.topics)
                self.channels.connecting(held)
                await pubsub.subscribe(*(self._channel(s) for s in held), self._heads, self._access)
                manager = asyncio.get_running_loop().create_task(self._manage(pubsub))
                loop = asyncio.get_running_loop()
                heard, pinged = loop.time(), False
                while True:
                    raise_if_cancelled()
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=False, timeout=self.poll_every
                    )
                    if message is None:
                        # A Redis that stopped answering without closing the connection
                        # (paused, a network partition) must not pass for a quiet one.
                        silent = loop.time() - heard
                        if silent > self.silent_limit:
                            raise ConnectionError(f"no answer from Redis for {silent:.0f}s")
                        if silent > self.ping_after and not pinged:
                            await pubsub.ping()
                            pinged = True
                        if manager.done():
                            raise ConnectionError("sending subscriptions to Redis failed")
                        continue
                    heard, pinged = loop.time(), False
                    # What else Redis has sent already: delivered together, corked (``wire.
                    # cork``), a subscriber's frames of them go in one send. Only a process
                    # that fell behind has more than one; one message is written at once.
                    batch = [message]
                    while len(batch) < DISPATCH_BATCH:
                        more = await pubsub.get_message(ignore_subscribe_messages=False, timeout=0)
                        if more is None:
                            break
                        batch.append(more)
                    if len(batch) > 1:
                        wire.cork()
                        metrics.local.corked += len(batch)
                    try:
                        for message in batch:
                            kind = message["type"]
                            channel = message["channel"]
                            if kind == "message" and channel not in (self._heads, self._access):
                                await self._dispatch(channel, message["data"])
                                continue
                            wire.uncork()  # what follows may await: the held frames go first
                            if kind == "message":
                                if channel == self._heads:
                                    self._heads_message(message["data"])
                                else:
                                    self._access_message(message["data"])
                            elif kind == "subscribe":
                                if channel == self._access:
                                    # The batch is active (also after redis-py reconnected).
                                    delay = RECONNECT_MIN
                                    await self.subscribed()
                                elif channel != self._heads:
                                    self._confirmed(channel[len(self._topic_prefix) :].decode())
                            elif kind == "unsubscribe" and channel.startswith(
                                self._topic_prefix.encode()
                            ):
                                self.channels.unsubscribed(
                                    channel[len(self._topic_prefix) :].decode()
                                )
                    finally:
                        wire.uncork()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.ready.is_set():
                    logger.warning(
                        "hub %s lost Redis (%s: %s); reconnecting", self.id, type(exc).__name__, exc
                    )
                self.ready.clear()
                self.report_gauges()
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                if manager is not None:
                    manager.cancel()
                self.ready.clear()
                self.channels.lost()
                await _close_quietly(*closables)

    async def _manage(self, pubsub: Any) -> None:
        """Send the batched SUBSCRIBEs and UNSUBSCRIBEs of this connection to Redis: new
        topics at once (a subscribe waits for them), lingering ones once their time is up.
        A failure ends it (the reader sees the connection fail and starts again)."""
        try:
            await self._batches(pubsub)
        except Exception as exc:
            logger.debug("hub %s: subscription batches ended (%s)", self.id, exc)

    async def _batches(self, pubsub: Any) -> None:
        changes = self.channels.changes
        while True:
            raise_if_cancelled()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that lands as the event is set, and this loop would never end.
                async with asyncio.timeout(1.0):
                    await changes.wait()
            except TimeoutError:
                pass
            subscribe, unsubscribe = self.channels.next_batch(time.monotonic())
            if subscribe:
                await pubsub.subscribe(*(self._channel(slug) for slug in subscribe))
            if unsubscribe:
                for slug in unsubscribe:
                    self.heads.pop(slug, None)  # no longer kept current
                await pubsub.unsubscribe(*(self._channel(slug) for slug in unsubscribe))

    async def subscribed(self) -> None:
        """The Redis subscription is (again) active: resync what may have been missed."""
        self.heads.clear()  # messages may have been missed while away
        self.subscribes += 1
        first = self.subscribes == 1
        self.ready.set()
        if first:
            logger.info("hub %s subscribed to Redis %s", self.id, self.url)
        else:
            logger.info("hub %s resubscribed; resyncing %d topic(s)", self.id, len(self.topics))
            # Access changes announced while away were missed: check every connection.
            self._access_message(b'{"all": true}')
            self.roster.rewrite()  # a restarted Redis holds no roster
        if not first:
            metrics.RESYNCS.inc()
        self.report_gauges()
        self.presence_dirty = True
        await self.resync()

    async def resync(self, slugs: list[str] | None = None) -> None:
        """Tell every local subscriber (of ``slugs``) its topic's latest seq, read from the
        database."""
        slugs = list(self.topics) if slugs is None else slugs
        if not slugs or self.read_heads is None:
            return
        epoch = self.epoch()
        try:
            heads = await sync_to_async(self.read_heads)(slugs)
        except Exception:
            logger.warning("hub %s could not read heads for resync", self.id, exc_info=True)
            return
        for slug, seq in heads.items():
            self.seed(slug, seq, epoch)
        self._advance(heads)

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        slug = channel[len(self._topic_prefix) :].decode()
        self.channel_messages += 1
        if data[:1] in keys.SIGNALS:  # presence changed, a whisper: not a message
            self._signal(slug, data)
            return
        seq, committed, body = keys.decode_event(data)
        if seq > self.heads.get(slug, seq):  # kept current for every seeded topic
            self.heads[slug] = seq
        subscribers = self.topics.get(slug)
        if not subscribers:
            return
        frame = Frame(body)  # decoded or framed once, for every local subscriber
        # Counted in plain ints (flushed into the metrics by the presence task): a frame
        # written costs a clock read and a bisect here, no prometheus-client call.
        local = metrics.local
        buckets, bounds, clock = local.buckets, metrics.LATENCY_BUCKETS, time.time
        sent, latency_sum = 0, 0.0
        for subscriber in list(subscribers):
            try:
                written = subscriber.push(slug, seq, frame)
                if written < 0:
                    wire.uncork()  # held frames first: other writes may come while it awaits
                    written = await subscriber.deliver(slug, seq, frame)
                if written:
                    sent += 1
                    if committed:
                        latency = clock() - committed
                        buckets[bisect_left(bounds, latency)] += 1
                        latency_sum += latency
            except Exception:
                logger.exception("delivering %s#%s failed on one connection", slug, seq)
        local.frames += sent
        local.latency_sum += latency_sum
        self.delivered += sent

    def _signal(self, slug: str, data: bytes) -> None:
        kind, body = data[:1], data[2:]
        if kind == keys.PRESENCE_SIGNAL:
            self.roster.changed(slug)
            return
        try:
            sender, text = body.decode().split(" ", 1)
        except ValueError:
            logger.warning("hub %s ignored a malformed whisper on %s", self.id, slug)
            return
        frame = Frame(text.encode(), text)
        for subscriber in list(self.topics.get(slug, ())):
            try:
                subscriber.whisper(slug, frame, sender)
            except Exception:
                logger.exception("delivering a whisper of %s failed on one connection", slug)

    def _heads_message(self, data: bytes) -> None:
        try:
            heads = json.loads(data)
        except ValueError:
            logger.warning("hub %s ignored a malformed heads message", self.id)
            return
        if isinstance(heads, dict):
            self._advance({k: v for k, v in heads.items() if isinstance(v, int)})

    def _access_message(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            logger.warning("hub %s ignored a malformed access message", self.id)
            return
        for consumer in list(self.connections):
            try:
                consumer.access_changed(event)
            except Exception:
                logger.exception("checking access of one connection failed")

    def _advance(self, heads: dict[str, int]) -> None:
        for slug, seq in heads.items():
            if seq > self.heads.get(slug, seq):
                self.heads[slug] = seq
            for subscriber in list(self.topics.get(slug, ())):
                subscriber.advance(slug, seq)


async def _close_quietly(*closables: Any) -> None:
    """Close Redis clients without letting a dead connection hang or raise here."""
    for closable in closables:
        try:
            await asyncio.wait_for(closable.aclose(), timeout=1.0)
        except BaseException:  # noqa: BLE001 (also CancelledError: we are shutting down)
            pass


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub() -> Hub:
    """This event loop's hub for the configured Redis (created on first use)."""
    loop = asyncio.get_running_loop()
    config = keys.redis_config()
    per_loop = _hubs.setdefault(loop, {})
    found = per_loop.get(config)
    if found is None:
        from realtime import members, presence, topics

        found = per_loop[config] = Hub(
            *config, read_heads=topics.heads, companions=(presence.report, members.run)
        )
    return found


def all_hubs() -> list[Hub]:
    """Every hub of every event loop of this process."""
    return [h for per_loop in list(_hubs.values()) for h in per_loop.values()]


def loop_hubs() -> list[Hub]:
    """The hubs of the running event loop."""
    try:
        return list(_hubs.get(asyncio.get_running_loop(), {}).values())
    except RuntimeError:
        return []


async def stop_loop_hubs() -> None:
    """Stop and forget the running loop's hubs (tests that run many event loops)."""
    for found in loop_hubs():
        await found.stop()
    _hubs.pop(asyncio.get_running_loop(), None)
