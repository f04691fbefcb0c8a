"""The fan-out engine: one Redis subscription per process, direct delivery to local sockets.

The Channels tutorial design (each consumer joins a group; ``group_send``; the layer queues an
event per consumer; each consumer's task dispatches it) costs a Redis round trip, a queue and a
task wake-up *per connection and message*. Here each process (event loop) holds one ``Hub``:
one Redis connection PSUBSCRIBEd to every topic, and a map topic → local subscribers. A message
is one PUBLISH; each process receives it once and hands the pre-serialised frame to its local
subscribers with a direct call. Redis remains the cross-process fan-out, so any number of daphne
processes share topics.

Redis pub/sub keeps nothing: while the hub is disconnected it misses messages. On every
(re)subscribe it therefore *resyncs*: reads each local topic's latest seq from the database and
tells every local subscriber, which fills what it missed from the database. Heads announced by
the scheduler (``HEADS`` channel) repair a lost *last* message the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings

from realtime.conf import realtime_settings
from realtime.wire import Frame

logger = logging.getLogger("realtime.engine")

RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0
PRESENCE_EVERY, PRESENCE_TTL = 2.0, 10


class Subscriber(Protocol):
    """What the hub needs of a local connection (``RealtimeConsumer`` implements it)."""

    async def deliver(self, slug: str, seq: int, frame: Frame) -> None: ...

    def advance(self, slug: str, seq: int) -> None: ...


def redis_config() -> tuple[str, str]:
    """(Redis URL, key prefix) of the channel layer that ``REALTIME['CHANNEL_LAYER']`` names."""
    alias = realtime_settings.CHANNEL_LAYER
    config = settings.CHANNEL_LAYERS.get(alias, {}).get("CONFIG", {})
    hosts = config.get("hosts") or ["redis://127.0.0.1:6379/0"]
    host = hosts[0]
    if isinstance(host, dict):
        host = host.get("address", "redis://127.0.0.1:6379/0")
    elif isinstance(host, (tuple, list)):
        host = f"redis://{host[0]}:{host[1]}/0"
    return str(host), str(config.get("prefix", "asgi"))


def topic_channel(prefix: str, slug: str) -> str:
    return f"{prefix}:rt:topic:{slug}"


def heads_channel(prefix: str) -> str:
    return f"{prefix}:rt:heads"


def presence_key(prefix: str, hub_id: str) -> str:
    return f"{prefix}:rt:presence:{hub_id}"


def encode_event(seq: int, frame: str) -> str:
    """The pub/sub payload: ``"<seq> <frame>"``, so a hub reads seq without parsing JSON."""
    return f"{seq} {frame}"


# --- publishing (any process) ------------------------------------------------------------------

_sync_clients: dict[str, redis.Redis] = {}


def sync_client(url: str) -> redis.Redis:
    """A process-wide synchronous client (thread-safe pool) for after-commit fan-out."""
    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, retry_on_timeout=False
        )
    return client


def publish_sync(events: Iterable[tuple[str, int, str]]) -> None:
    """PUBLISH each (slug, seq, frame) in one pipeline round trip. Raises on Redis errors."""
    url, prefix = redis_config()
    pipe = sync_client(url).pipeline(transaction=False)
    for slug, seq, frame in events:
        pipe.publish(topic_channel(prefix, slug), encode_event(seq, frame))
    pipe.execute()


def announce_heads_sync(heads: dict[str, int]) -> None:
    """Tell every hub the latest seq of these topics (the scheduler does this each tick)."""
    if heads:
        url, prefix = redis_config()
        sync_client(url).publish(heads_channel(prefix), json.dumps(heads))


def subscriber_count(slug: str) -> int:
    """Connections subscribed to ``slug`` now, over every live process (presence in Redis)."""
    url, prefix = redis_config()
    client = sync_client(url)
    total = 0
    for key in client.scan_iter(match=presence_key(prefix, "*"), count=500):
        value = client.hget(key, slug)
        total += int(value or 0)
    return total


# --- the per-process hub ------------------------------------------------------------------------


class Hub:
    """One per event loop: a Redis pub/sub reader and the local subscribers by topic."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.topics: dict[str, set[Subscriber]] = {}
        self.connections: set[Any] = set()  # every local consumer, for shutdown
        self.per_address: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.presence_task: asyncio.Task | None = None
        self.subscribes = 0  # successful (re)subscriptions to Redis
        # Latest seq per topic, kept from the stream once seeded from the database while
        # subscribed (``seed``); cleared whenever the subscription is re-established.
        self.heads: dict[str, int] = {}
        self._topic_prefix = topic_channel(prefix, "")
        self._heads = heads_channel(prefix)
        self._heads_bytes = self._heads.encode()
        self._presence_dirty = True
        # The watchdog of the pub/sub connection (seconds): poll, ping when quiet, give up.
        self.poll_every, self.ping_after, self.silent_limit = 5.0, 15.0, 30.0

    # -- local subscribers

    def add(self, slug: str, subscriber: Subscriber) -> None:
        self.topics.setdefault(slug, set()).add(subscriber)
        self._presence_dirty = True
        self.start()

    def discard(self, slug: str, subscriber: Subscriber) -> None:
        subscribers = self.topics.get(slug)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self.topics[slug]
            self._presence_dirty = True

    def connected(self, consumer: Any, address: str, limit: int) -> bool:
        """Count a new connection from ``address``; False (not counted) beyond ``limit``."""
        if limit and self.per_address[address] >= limit:
            return False
        self.per_address[address] += 1
        self.connections.add(consumer)
        return True

    def disconnected(self, consumer: Any, address: str) -> None:
        if consumer in self.connections:
            self.connections.discard(consumer)
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]

    def head(self, slug: str) -> int | None:
        """The topic's latest seq, when this hub knows it for sure."""
        return self.heads.get(slug) if self.ready.is_set() else None

    def epoch(self) -> int | None:
        """Identifies the current Redis subscription (None while there is none)."""
        return self.subscribes if self.ready.is_set() else None

    def seed(self, slug: str, seq: int, epoch: int | None) -> None:
        """Record ``seq`` as read from the database while subscription ``epoch`` was active:
        every later message of the topic reaches this hub, so it can keep the head current."""
        if epoch is not None and epoch == self.epoch():
            if seq > self.heads.get(slug, -1):
                self.heads[slug] = seq

    def counts(self) -> dict[str, int]:
        return {slug: len(subs) for slug, subs in self.topics.items()}

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
            self.task = asyncio.get_running_loop().create_task(self._run(), name="realtime-hub")
            self.presence_task = asyncio.get_running_loop().create_task(
                self._presence(), name="realtime-presence"
            )

    async def stop(self, timeout: float = 2.0) -> None:
        """Cancel the reader and presence tasks (waiting at most ``timeout`` for them)."""
        tasks = [t for t in (self.task, self.presence_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.ready.clear()

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(self._topic_prefix + "*", self._heads)
                loop = asyncio.get_running_loop()
                heard, pinged = loop.time(), False
                while True:
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
                        continue
                    heard, pinged = loop.time(), False
                    kind = message["type"]
                    if kind == "pmessage":
                        if message["channel"] == self._heads_bytes:
                            self._heads_message(message["data"])
                        else:
                            await self._dispatch(message["channel"], message["data"])
                    elif kind == "psubscribe" and message["data"] == 2:
                        # Both patterns active (also after redis-py reconnected by itself).
                        delay = RECONNECT_MIN
                        await self._subscribed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.ready.is_set():
                    logger.warning(
                        "hub %s lost Redis (%s: %s); reconnecting", self.id, type(exc).__name__, exc
                    )
                self.ready.clear()
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
            finally:
                self.ready.clear()
                await _close_quietly(pubsub, client)

    async def _subscribed(self) -> None:
        self.heads.clear()  # messages may have been missed while away
        self.subscribes += 1
        first = self.subscribes == 1
        self.ready.set()
        if first:
            logger.info("hub %s subscribed to Redis %s", self.id, self.url)
        else:
            logger.info("hub %s resubscribed; resyncing %d topic(s)", self.id, len(self.topics))
        self._presence_dirty = True
        await self.resync()

    async def resync(self) -> None:
        """Tell every local subscriber its topic's latest seq, read from the database."""
        slugs = list(self.topics)
        if not slugs:
            return
        epoch = self.epoch()
        try:
            heads = await sync_to_async(_heads_from_database)(slugs)
        except Exception:
            logger.warning("hub %s could not read heads for resync", self.id, exc_info=True)
            return
        for slug, seq in heads.items():
            self.seed(slug, seq, epoch)
        self._advance(heads)

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        slug = channel[len(self._topic_prefix) :].decode()
        seq_text, _, payload = data.partition(b" ")
        seq = int(seq_text)
        if seq > self.heads.get(slug, seq):  # kept current for every seeded topic
            self.heads[slug] = seq
        subscribers = self.topics.get(slug)
        if not subscribers:
            return
        frame = Frame(payload)  # decoded or framed once, for every local subscriber
        for subscriber in list(subscribers):
            try:
                await subscriber.deliver(slug, seq, frame)
            except Exception:
                logger.exception("delivering %s#%s failed on one connection", slug, seq)

    def _heads_message(self, data: bytes) -> None:
        try:
            heads = json.loads(data)
        except ValueError:
            logger.warning("hub %s ignored a malformed heads message", self.id)
            return
        if isinstance(heads, dict):
            self._advance({k: v for k, v in heads.items() if isinstance(v, int)})

    def _advance(self, heads: dict[str, int]) -> None:
        for slug, seq in heads.items():
            if seq > self.heads.get(slug, seq):
                self.heads[slug] = seq
            for subscriber in list(self.topics.get(slug, ())):
                subscriber.advance(slug, seq)

    # -- presence: how many local connections hold each topic, for the admin

    async def _presence(self) -> None:
        key = presence_key(self.prefix, self.id)
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
        try:
            while True:
                await asyncio.sleep(PRESENCE_EVERY)
                try:
                    if self._presence_dirty:
                        self._presence_dirty = False
                        counts = self.counts()
                        pipe = client.pipeline(transaction=True)
                        pipe.delete(key)
                        if counts:
                            pipe.hset(key, mapping=counts)
                        pipe.expire(key, PRESENCE_TTL)
                        await pipe.execute()
                    else:
                        await client.expire(key, PRESENCE_TTL)
                except Exception:
                    self._presence_dirty = True
        finally:
            await _close_quietly(client)


async def _close_quietly(*closables: Any) -> None:
    """Close Redis clients without letting a dead connection hang or raise here."""
    for closable in closables:
        try:
            await asyncio.wait_for(closable.aclose(), timeout=1.0)
        except BaseException:  # noqa: BLE001 (also CancelledError: we are shutting down)
            pass


def _heads_from_database(slugs: list[str]) -> dict[str, int]:
    from django.db import close_old_connections

    from realtime.models import Topic

    close_old_connections()
    return dict(Topic.objects.filter(slug__in=slugs).values_list("slug", "last_seq"))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub() -> Hub:
    """This event loop's hub for the configured Redis (created on first use)."""
    loop = asyncio.get_running_loop()
    config = redis_config()
    per_loop = _hubs.setdefault(loop, {})
    found = per_loop.get(config)
    if found is None:
        found = per_loop[config] = Hub(*config)
    return found


_shutdown_installed = False


def install_shutdown_close() -> None:
    """Under daphne: before the server stops, close every local socket with 1001 (going away)
    so that clients reconnect (with jitter) instead of seeing an abnormal closure."""
    global _shutdown_installed
    if _shutdown_installed or "daphne.server" not in sys.modules:
        return
    _shutdown_installed = True
    from twisted.internet import reactor, task

    logger.debug("closing sockets with 1001 at shutdown (reactor %s)", type(reactor).__name__)

    def close_all() -> Any:
        closing = 0
        for found in list(_hubs.values()):
            for hub_ in found.values():
                for consumer in list(hub_.connections):
                    try:
                        closing += consumer.server_shutdown()
                    except Exception:
                        logger.exception("could not close a connection at shutdown")
        logger.info("server shutting down: closed %d connection(s) with 1001", closing)
        # Give the close frames a moment to leave before the reactor stops.
        return task.deferLater(reactor, 0.5 if closing else 0, lambda: None)

    # Registered when the ASGI application is imported, before daphne registers its own
    # trigger that cancels every application: ours must run first.
    reactor.addSystemEventTrigger("before", "shutdown", close_all)


def loop_hubs() -> list[Hub]:
    try:
        return list(_hubs.get(asyncio.get_running_loop(), {}).values())
    except RuntimeError:
        return []
