"""Redis, one server or a Redis Cluster: the clients every part of the app uses, and a hub's
sharded subscription.

``redis://host:port/db`` is one Redis: topics are PUBLISHed and each hub SUBSCRIBEs on one
connection. ``redis+cluster://host:port[,host:port...]/0`` is a Redis Cluster (the hosts are
seeds; any reachable one tells the rest): topic messages go with ``SPUBLISH`` to the master
that owns the topic channel's hash slot, and each hub ``SSUBSCRIBE``s on the owner of every
topic it holds (``ShardedPubSub``), so a message crosses only its own shard instead of every
node's bus. The few cluster-wide announcements (heads, access changes) stay classic PUBLISH /
SUBSCRIBE, which a cluster forwards to every node.

A slot that moves, a master that fails over or a node that stops answering ends the hub's
subscription like a lost single Redis does: it reconnects (reading the slot map again),
subscribes every held topic on its new owner, and reads what it may have missed from the
database.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from realtime.aio import raise_if_cancelled

SCHEME = "redis+cluster"


def is_cluster(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def seeds(url: str) -> list[tuple[str, int]]:
    """The (host, port) seed nodes of a ``redis+cluster://`` URL; ValueError says what is wrong."""
    if not is_cluster(url):
        raise ValueError(f"{url!r} is not a {SCHEME}:// URL")
    rest = url[len(SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not /{path.strip('/')}")
    found = []
    for part in netloc.split(","):
        parsed = urlsplit("//" + part.strip())
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ValueError(f"{part!r} in {url!r} is not host:port")
        found.append((parsed.hostname, port))
    return found


def sync_client(url: str, **options: Any) -> Any:
    """A thread-safe synchronous client: ``redis.Redis`` or ``redis.cluster.RedisCluster``."""
    if is_cluster(url):
        from redis.cluster import ClusterNode, RedisCluster

        options.pop("retry_on_timeout", None)
        # No retries: a node that does not answer would hold the publisher for every retry
        # and slot-map reload (1.2-2.5 s measured with a stopped master against a 0.1 s
        # timeout); a failed fan-out is the outbox sweep's to send (MOVED still updates the
        # slot map, for the next try).
        options.setdefault("retry", Retry(NoBackoff(), 0))
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds(url)], **options
        )
    return redis.Redis.from_url(url, **options)


def async_client(url: str, **options: Any) -> Any:
    """An asyncio client of this event loop: ``Redis`` or ``RedisCluster``."""
    if is_cluster(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds(url)], **options
        )
    return aioredis.Redis.from_url(url, **options)


def probe(url: str, timeout: float = 0.5) -> str | None:
    """``"cluster"`` or ``"single"``: what the (first answering) server of ``url`` says it is
    (INFO cluster); None when none answers (a check then says nothing: health does)."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    try:
        targets = (
            [redis.Redis(host=h, port=p, **options) for h, p in seeds(url)]
            if is_cluster(url)
            else [redis.Redis.from_url(url, **options)]
        )
    except ValueError:  # a malformed URL: another check says so
        return None
    for client in targets:
        try:
            enabled = client.info("cluster").get("cluster_enabled")
        except Exception:
            continue
        finally:
            client.close()
        return "cluster" if enabled else "single"
    return None


def topic_publish(target: Any, cluster: bool, channel: str, payload: bytes) -> Any:
    """PUBLISH (one Redis) or SPUBLISH (a cluster) on a topic channel, through a client or a
    pipeline."""
    if cluster:
        return target.spublish(channel, payload)
    return target.publish(channel, payload)


def open_pubsub(url: str, control: tuple[bytes, ...]) -> tuple[Any, tuple[Any, ...]]:
    """A hub's subscription: (pubsub, what to close after it). ``control`` are the
    cluster-wide channels (classic SUBSCRIBE); every other channel is a topic's."""
    if is_cluster(url):
        pubsub = ShardedPubSub(seeds(url), control)
        return pubsub, (pubsub,)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    pubsub = client.pubsub()
    return pubsub, (pubsub, client)


class SlotMap:
    """Which master serves each hash slot, read with CLUSTER SLOTS."""

    def __init__(self, ranges: list[tuple[int, int, tuple[str, int]]]):
        self.ranges = sorted(ranges)
        self.starts = [start for start, _, _ in self.ranges]

    def owner(self, channel: bytes) -> tuple[str, int]:
        slot = key_slot(channel)
        index = bisect_right(self.starts, slot) - 1
        if index >= 0:
            start, end, node = self.ranges[index]
            if start <= slot <= end:
                return node
        raise ConnectionError(f"no master serves slot {slot} (the cluster is down)")

    def masters(self) -> set[tuple[str, int]]:
        return {node for _, _, node in self.ranges}

    @classmethod
    async def read(cls, nodes: list[tuple[str, int]]) -> SlotMap:
        """Ask the nodes in turn; the first that answers gives the map."""
        errors = []
        for host, port in nodes:
            client = aioredis.Redis(
                host=host, port=port, socket_connect_timeout=2, socket_timeout=2
            )
            try:
                answer = await client.execute_command("CLUSTER SLOTS")
            except Exception as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            finally:
                await client.aclose()
            ranges = []
            for start, end, master, *_ in answer:
                master_host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                ranges.append((int(start), int(end), (master_host or host, int(master[1]))))
            if ranges:
                return cls(ranges)
            errors.append(f"{host}:{port}: no slots served")
        raise ConnectionError("no cluster node answered CLUSTER SLOTS (" + "; ".join(errors) + ")")


PING_AFTER, SILENT_LIMIT = 15.0, 30.0  # seconds, as the hub's own watchdog
_RENAMED = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class ShardedPubSub:
    """One hub's subscription on a Redis Cluster, with the interface of redis-py's PubSub
    that the hub uses (``subscribe``, ``unsubscribe``, ``get_message``, ``ping``, ``aclose``).

    Topic channels are SSUBSCRIBEd, one command per channel (a command's channels must share
    a slot), on a connection to the master that owns the slot; the control channels are
    SUBSCRIBEd on one node. A reader task per connection queues what arrives, sharded
    messages renamed to their classic names. Confirmations of the control channels wait until
    every topic channel asked for before them is confirmed, so the hub's rule still holds:
    once ``access`` is confirmed, every topic of that batch is active. A connection that
    fails, an error reply (MOVED, CLUSTERDOWN) or a ``sunsubscribe`` the hub did not ask for
    (its slot moved) raises from ``get_message``: the hub starts again from the slot map.
    """

    def __init__(self, seed_nodes: list[tuple[str, int]], control: tuple[bytes, ...]):
        self.seed_nodes = seed_nodes
        self.control = set(control)
        self.slots: SlotMap | None = None
        self.connections: dict[tuple[str, int], tuple[Any, Any]] = {}  # node → (client, pubsub)
        self.readers: dict[tuple[str, int], asyncio.Task] = {}
        self.owners: dict[bytes, tuple[str, int]] = {}  # topic channel → node
        self.queue: asyncio.Queue = asyncio.Queue()
        self.unconfirmed: set[bytes] = set()
        self.dropping: set[bytes] = set()  # channels this hub asked to leave
        self.held_back: list[dict[str, Any]] = []

    async def _connection(self, node: tuple[str, int]) -> Any:
        found = self.connections.get(node)
        if found is not None:
            return found[1]
        client = aioredis.Redis(
            host=node[0],
            port=node[1],
            socket_connect_timeout=2,
            retry=AsyncRetry(NoBackoff(), 0),  # a failure ends the subscription, not retried
        )
        pubsub = client.pubsub()
        self.connections[node] = (client, pubsub)
        return pubsub

    def _start_reader(self, node: tuple[str, int]) -> None:
        if node not in self.readers:
            pubsub = self.connections[node][1]
            self.readers[node] = asyncio.get_running_loop().create_task(self._read(node, pubsub))

    async def _read(self, node: tuple[str, int], pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        try:
            while True:
                raise_if_cancelled()
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=5.0)
                if message is None:
                    # A node that stopped answering without closing the connection.
                    silent = loop.time() - heard
                    if silent > SILENT_LIMIT:
                        raise ConnectionError(f"no answer for {silent:.0f}s")
                    if silent > PING_AFTER and not pinged:
                        await pubsub.ping()
                        pinged = True
                    continue
                heard, pinged = loop.time(), False
                self._arrived(node, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.queue.put_nowait(ConnectionError(f"cluster node {node[0]}:{node[1]}: {exc}"))

    def _arrived(self, node: tuple[str, int], message: dict[str, Any]) -> None:
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        channel = message.get("channel")
        if kind == "ssubscribe":
            self.unconfirmed.discard(channel)
        elif kind == "sunsubscribe" and channel not in self.dropping:
            self.queue.put_nowait(
                ConnectionError(f"the slot of {channel!r} moved away from {node[0]}:{node[1]}")
            )
            return
        elif kind == "sunsubscribe":
            self.dropping.discard(channel)
            self.owners.pop(channel, None)
        message = {**message, "type": _RENAMED.get(kind, kind)}
        if kind == "subscribe" and self.unconfirmed:
            self.held_back.append(message)
            return
        self.queue.put_nowait(message)
        if self.held_back and not self.unconfirmed:
            for held in self.held_back:
                self.queue.put_nowait(held)
            self.held_back.clear()

    async def subscribe(self, *channels: bytes) -> None:
        if self.slots is None:
            self.slots = await SlotMap.read(self.seed_nodes)
        topics = [c for c in channels if c not in self.control]
        control = [c for c in channels if c in self.control]
        self.unconfirmed.update(topics)
        for channel in topics:
            node = self.slots.owner(channel)
            self.dropping.discard(channel)
            pubsub = await self._connection(node)
            await pubsub.ssubscribe(channel)
            self.owners[channel] = node
            self._start_reader(node)
        if control:
            node = min(self.slots.masters())
            pubsub = await self._connection(node)
            await pubsub.subscribe(*control)
            self._start_reader(node)

    async def unsubscribe(self, *channels: bytes) -> None:
        by_node: dict[tuple[str, int], list[bytes]] = {}
        for channel in channels:
            node = self.owners.get(channel)
            if node is not None:
                by_node.setdefault(node, []).append(channel)
        for node, dropped in by_node.items():
            pubsub = self.connections[node][1]
            for channel in dropped:
                self.dropping.add(channel)
                self.unconfirmed.discard(channel)
                await pubsub.sunsubscribe(channel)

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = None
    ) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(timeout):
                item = await self.queue.get()
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def ping(self) -> None:
        for _, pubsub in list(self.connections.values()):
            if pubsub.connection is not None:
                await pubsub.ping()

    async def aclose(self) -> None:
        for task in self.readers.values():
            task.cancel()
        if self.readers:
            await asyncio.wait(list(self.readers.values()), timeout=1.0)
        for client, pubsub in self.connections.values():
            for closable in (pubsub, client):
                try:
                    async with asyncio.timeout(1.0):
                        await closable.aclose()
                except BaseException:  # noqa: BLE001 (a dead node, or we are cancelled)
                    pass
        self.connections.clear()
        self.readers.clear()
