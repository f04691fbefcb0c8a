"""Every Redis write of the app: topic messages, heads, access changes, presence counts, the lock
(who is here and whispers are written by the hub's roster, ``realtime.members``).

A stored message becomes one Redis PUBLISH carrying its frame, already serialised, so no
process or connection re-encodes it (``realtime.engine`` is the receiving side). Redis is a fast
path: a message whose fan-out fails stays unmarked in the outbox and the scheduler's sweep sends
it later; consumers drop the duplicate if both arrive.

The after-commit fan-out runs in the caller's thread (a request, a daphne database thread), so
it must never hold the caller: it uses a client with a short timeout (``FANOUT_TIMEOUT``) and a
circuit breaker. After a failure, fan-outs are skipped for ``FANOUT_COOLDOWN`` seconds and the
messages are left to the outbox sweep; then one fan-out tries Redis again.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.utils import timezone

from realtime import cluster, keys, metrics, payload, protocol
from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.fanout")


# --- frames ------------------------------------------------------------------------------------


class Counters:
    """Process-wide counts of what the fan-out did (read by the metrics and the tests)."""

    def __init__(self) -> None:
        self.sanitized = 0  # stored rows whose data had to be repaired to be sent
        self.skipped = 0  # after-commit fan-outs left to the sweep by the open breaker
        self.failed = 0  # after-commit fan-outs that failed


counters = Counters()


def frame(message: Any) -> str:
    """The ``message`` frame of a stored ``Message`` (its topic loaded)."""
    return stored_frame(
        message.topic.slug, message.seq, message.created_at, message.data, message.html
    )


def stored_frame(slug: str, seq: int, created_at: Any, data: Any, html: str | None) -> str:
    """The ``message`` frame of a stored row. Never raises for the message's content: data
    that cannot be sent as is (stored before it was refused at every entry) is repaired and
    the repair logged, so one row cannot block delivery of the others."""
    data, repaired = payload.sendable(data)
    if repaired:
        counters.sanitized += 1
        logger.error(
            "%s#%s holds data that cannot be sent as stored (lone surrogates, NUL, NaN); "
            "sent with those characters replaced.",
            slug,
            seq,
        )
    return protocol.message(slug, seq, created_at, data, html or None)


# --- clients and the breaker -------------------------------------------------------------------

_clients: dict[tuple[str, float], redis.Redis] = {}
_clients_lock = threading.Lock()


def client(timeout: float = 2.0) -> redis.Redis:
    """A process-wide synchronous client (thread-safe pool) with this socket timeout."""
    url, _ = keys.redis_config()
    found = _clients.get((url, timeout))
    if found is None:
        with _clients_lock:
            found = _clients.get((url, timeout))
            if found is None:
                found = _clients[(url, timeout)] = cluster.sync_client(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry_on_timeout=False,
                )
    return found


class Breaker:
    """Closed: calls go through. After a failure it opens for ``cooldown`` seconds (calls are
    refused at once); then one call may try again (half-open), closing it on success."""

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.cooldown = cooldown
        self.clock = clock
        self.open_until = 0.0
        self.trying = False
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            if self.open_until == 0.0:
                return True
            if self.clock() < self.open_until or self.trying:
                return False
            self.trying = True  # half-open: this caller tries, the others still skip
            return True

    def succeeded(self) -> None:
        with self.lock:
            self.open_until, self.trying = 0.0, False

    def failed(self) -> None:
        with self.lock:
            self.open_until, self.trying = self.clock() + self.cooldown, False

    @property
    def is_open(self) -> bool:
        return self.open_until != 0.0


breakers: dict[str, Breaker] = {}  # by Redis URL


def breaker() -> Breaker:
    """The after-commit fan-out's breaker for the configured Redis."""
    url, _ = keys.redis_config()
    found = breakers.get(url)
    if found is None:
        found = breakers.setdefault(url, Breaker(realtime_settings.FANOUT_COOLDOWN))
    return found


# --- topic messages ----------------------------------------------------------------------------


def publish_events(
    events: Iterable[tuple[str, int, str, float | None]],
    timeout: float = 2.0,
    target: Any = None,
) -> None:
    """PUBLISH each (slug, seq, frame, commit time) in one round trip (a pipeline when there
    are several), through the process-wide client or ``target``. Raises on Redis errors."""
    url, prefix = keys.redis_config()
    sharded = cluster.is_cluster(url)
    batch = [
        (keys.topic_channel(prefix, slug), keys.encode_event(seq, text, committed))
        for slug, seq, text, committed in events
    ]
    redis = target or client(timeout)
    if len(batch) == 1:  # a publish's one message: the command alone, no pipeline to build
        cluster.topic_publish(redis, sharded, *batch[0])
        return
    pipe = redis.pipeline(transaction=False)
    for channel, event in batch:
        cluster.topic_publish(pipe, sharded, channel, event)
    pipe.execute()


def send_now(
    messages: Iterable[Any], timeout: float = 2.0, committed: float | None = None
) -> list[int]:
    """Publish the messages (one pipeline); return their ids. Raises when Redis fails.
    ``committed``: when their transaction committed (default: each one's ``created_at``)."""
    batch = list(messages)
    publish_events(
        ((m.topic.slug, m.seq, frame(m), committed or m.created_at.timestamp()) for m in batch),
        timeout,
    )
    return [m.pk for m in batch]


async def send(messages: Iterable[Any]) -> list[int]:
    """``send_now`` from async code (the scheduler's sweep)."""
    return await sync_to_async(send_now, thread_sensitive=False)(list(messages))


def mark_fanned_out(ids: list[int]) -> None:
    """Mark these messages as sent (the sweep leaves them). One UPDATE statement written out:
    the ORM's compiler was a third of the publisher's time spent after the send."""
    from django.db import connections

    from realtime.models import Message

    if not ids:
        return
    connection = connections[Message.objects.db]
    meta = Message._meta
    quote = connection.ops.quote_name
    sent = quote(meta.get_field("fanned_out_at").column)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {sent} = %s"
            f" WHERE {quote(meta.pk.column)} IN ({marks}) AND {sent} IS NULL",
            [now, *ids],
        )


def fan_out_after_commit(messages: list[Any]) -> None:
    """The after-commit hook of ``publish()``: send now, or hand the messages to this
    process's lane (``Lane``), which sends them in order as soon as Redis answers; the outbox
    sweep sends whatever neither could. Holds the caller for at most about
    ``FANOUT_TIMEOUT`` (the breaker skips Redis while it is failing)."""
    committed = time.time()
    for message in messages:
        metrics.PUBLISHED.labels(message.source).inc()
    behind = the_lane()
    if behind.busy():  # earlier messages wait there: these go after them, in order
        behind.put(messages, committed)
        return
    gate = breaker()
    if not gate.allow():
        counters.skipped += 1
        metrics.FANOUT_FAILURES.labels("breaker_open").inc(len(messages))
        behind.put(messages, committed)
        return
    try:
        ids = send_now(messages, timeout=realtime_settings.FANOUT_TIMEOUT, committed=committed)
    except Exception as exc:
        gate.cooldown = realtime_settings.FANOUT_COOLDOWN
        gate.failed()
        counters.failed += 1
        metrics.FANOUT_FAILURES.labels("redis_error").inc(len(messages))
        logger.warning(
            "Fan-out of %s failed (%s: %s); this process's lane sends it when Redis answers "
            "(else the outbox sweep). Skipping Redis in the publisher's thread for %.3gs.",
            ", ".join(f"{m.topic.slug}#{m.seq}" for m in messages[:5]),
            type(exc).__name__,
            exc,
            gate.cooldown,
        )
        behind.put(messages, committed)
        return
    gate.succeeded()
    try:
        mark_fanned_out(ids)
    except Exception:
        # Sent but not marked: the sweep sends it again and consumers drop the duplicate.
        logger.warning("Could not mark %d message(s) as fanned out.", len(ids), exc_info=True)


class Lane:
    """The messages a process's after-commit fan-out could not send at once (a timeout, an
    open breaker), sent in order by one daemon thread as soon as Redis answers, with the
    sweep's 2 s timeout, instead of waiting ``OUTBOX_GRACE`` for the scheduler's sweep.

    A timeout of the after-commit send is often a busy machine, not a failing Redis (the
    publisher's thread was not scheduled within ``FANOUT_TIMEOUT``): before the lane, every
    message of the breaker's cool-down then waited for the sweep (2-3 s), which stretched a
    run's deliveries. While the lane holds messages, new ones queue behind them (order). What
    it cannot send (Redis down) it retries with back-off; the rows stay unmarked, so the
    sweep sends them too if the lane gives up or the process ends, and consumers drop the
    duplicate by seq. Bounded: beyond ``MAX`` messages new ones are left to the sweep.
    """

    MAX = 10_000
    BATCH = 500
    GIVE_UP_AFTER = 30.0  # seconds of failing before the sweep alone is left with them

    def __init__(self) -> None:
        self.queue: deque[tuple[Any, float]] = deque()
        self.sending = 0
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False

    def busy(self) -> bool:
        with self.cond:
            return bool(self.queue) or bool(self.sending)

    def put(self, messages: list[Any], committed: float) -> None:
        with self.cond:
            room = self.MAX - len(self.queue) - self.sending
            for message in messages[: max(0, room)]:
                self.queue.append((message, committed))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="realtime-lane", daemon=True)
                self.thread.start()
            self.cond.notify()

    def stop(self) -> None:
        """At interpreter exit: half a second to send what it holds (a command that published
        and ends), then the thread ends between two sends (the rest stays for the sweep), so
        that it is never frozen in the middle of one."""
        with self.cond:
            self.cond.wait_for(lambda: not self.queue and not self.sending, timeout=0.5)
            self.stopping = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(0.5)

    def _run(self) -> None:
        from django.db import connections

        # A client of this thread's own: at interpreter exit a daemon thread is frozen where
        # it stands, and one frozen inside the process-wide client's pool (holding its lock)
        # hung the main thread's exit as it closed that client (seen with Redis down).
        url, _ = keys.redis_config()
        own = cluster.sync_client(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        delay, failing_since = 0.05, 0.0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                batch = [self.queue.popleft() for _ in range(min(self.BATCH, len(self.queue)))]
                self.sending = len(batch)
            try:
                publish_events(
                    ((m.topic.slug, m.seq, frame(m), committed) for m, committed in batch),
                    timeout=2.0,
                    target=own,
                )
            except Exception as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                with self.cond:
                    self.sending = 0
                    if now - failing_since < self.GIVE_UP_AFTER:
                        self.queue.extendleft(reversed(batch))  # again, first
                    else:
                        self.queue.clear()  # the sweep has them (their rows are unmarked)
                        failing_since = 0.0
                logger.debug("lane: Redis still failing (%s); retrying in %.2fs", exc, delay)
                with self.cond:
                    self.cond.wait_for(lambda: self.stopping, timeout=delay)
                delay = min(2.0, delay * 2)
                continue
            delay, failing_since = 0.05, 0.0
            try:
                mark_fanned_out([m.pk for m, _ in batch])
            except Exception:
                logger.warning("lane: could not mark %d message(s)", len(batch), exc_info=True)
            finally:
                connections.close_all()  # this thread's: back to the pool between batches
                with self.cond:
                    self.sending = 0
                    self.cond.notify_all()  # stop() may wait for an empty lane


_lane: Lane | None = None
_lane_lock = threading.Lock()


def the_lane() -> Lane:
    """This process's lane (made on first use)."""
    global _lane
    if _lane is None:
        with _lane_lock:
            if _lane is None:
                _lane = Lane()
                atexit.register(_lane.stop)
    return _lane


# --- heads, access changes ---------------------------------------------------------------------


def announce_heads(heads: dict[str, int]) -> None:
    """Tell every hub the latest seq of these topics, so a lost last message is fetched."""
    if heads:
        _, prefix = keys.redis_config()
        client().publish(keys.heads_channel(prefix), json.dumps(heads))


def announce_access_change(
    *,
    users: Iterable[int] = (),
    sessions: Iterable[str] = (),
    topics: Iterable[str] = (),
    families: Iterable[str] = (),
    everything: bool = False,
) -> None:
    """Tell every hub that these users', sessions', topics' or families' access may have
    ended."""
    event: dict[str, Any] = {
        "users": sorted(set(users)),
        "sessions": sorted(set(sessions)),
        "topics": sorted(set(topics)),
        "families": sorted(set(families)),
        "all": everything,
    }
    _, prefix = keys.redis_config()
    client().publish(keys.access_channel(prefix), json.dumps(event))


# --- presence ----------------------------------------------------------------------------------


async def write_presence(aclient: Any, key: str, counts: dict[str, int], ttl: int) -> None:
    """Replace one hub's subscriber counts (async client of the hub)."""
    pipe = aclient.pipeline(transaction=True)
    pipe.delete(key)
    if counts:
        pipe.hset(key, mapping=counts)
    pipe.expire(key, ttl)
    await pipe.execute()


async def write_hub_stats(aclient: Any, key: str, stats: dict[str, Any], ttl: int) -> None:
    pipe = aclient.pipeline(transaction=True)
    pipe.hset(key, mapping={k: str(v) for k, v in stats.items()})
    pipe.expire(key, ttl)
    await pipe.execute()


def hub_stats() -> list[dict[str, Any]]:
    """Every live hub's figures (``Hub.stats``), read from Redis."""
    _, prefix = keys.redis_config()
    found = client()
    hubs = []
    for key in found.scan_iter(match=keys.hub_stats_key(prefix, "*"), count=500):
        raw = {k.decode(): v.decode() for k, v in found.hgetall(key).items()}
        if raw:
            hub = key.decode().rsplit(":", 1)[-1]
            hubs.append({"hub": hub, **raw})
    for hub in hubs:
        for name in ("pid", "connections", "subscriptions", "frames"):
            hub[name] = int(hub.get(name, 0))
    return sorted(hubs, key=lambda h: (h.get("host", ""), h["pid"]))


def subscriber_counts() -> dict[str, int]:
    """Connections subscribed to each topic now, over every live process."""
    _, prefix = keys.redis_config()
    found = client()
    totals: dict[str, int] = {}
    for key in found.scan_iter(match=keys.presence_key(prefix, "*"), count=500):
        for field, value in found.hgetall(key).items():
            name = field.decode()
            if not name.startswith("_"):
                totals[name] = totals.get(name, 0) + int(value)
    return totals


def record_tick(owner: str) -> None:
    """The active scheduler finished a tick (for the admin's status page)."""
    _, prefix = keys.redis_config()
    client().set(
        keys.scheduler_tick_key(prefix),
        json.dumps({"owner": owner, "at": timezone.now().isoformat()}),
        ex=120,
    )


def last_tick() -> dict[str, Any] | None:
    _, prefix = keys.redis_config()
    raw = client().get(keys.scheduler_tick_key(prefix))
    return json.loads(raw) if raw else None


def presence_of(slug: str) -> tuple[list[dict[str, Any]], int]:
    """Who is on ``slug`` now over every live hub (``realtime.members``): signed-in members,
    each user once, and the connection count (the admin's topic page)."""
    _, prefix = keys.redis_config()
    found = client()
    fields = found.hgetall(keys.roster_key(prefix, slug))
    alive = {
        hub.decode()
        for hub in found.zrangebyscore(keys.hubs_alive_key(prefix), time.time() - 5.0, "+inf")
    }
    members: dict[Any, dict[str, Any]] = {}
    count = 0
    for hub, raw in fields.items():
        if hub.decode() not in alive:
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        count += int(entry.get("c", 0))
        for member in entry.get("m", ()):
            members.setdefault(member["user"], member)
    return sorted(members.values(), key=lambda m: str(m.get("name", ""))), count


def subscriber_count(slug: str) -> int:
    """Connections subscribed to ``slug`` now, over every live process (presence in Redis)."""
    return subscriber_counts().get(slug, 0)


# --- the scheduler's lock ----------------------------------------------------------------------


class LeaderLock:
    """A lock in Redis with an expiry: SET NX PX to take it, renewed only by its owner."""

    RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) "
        "elseif redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 "
        "else return 0 end"
    )
    RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
        "else return 0 end"
    )

    def __init__(self, ttl: float | None = None) -> None:
        _, prefix = keys.redis_config()
        self.client = client()
        self.key = keys.scheduler_lock_key(prefix)
        self.ttl_ms = int(1000 * (ttl or realtime_settings.SCHEDULER_LOCK_TTL))
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def acquire(self) -> bool:
        """Take or renew the lock; False when another scheduler holds it. Raises if Redis
        is unreachable."""
        return bool(self.client.eval(self.RENEW, 1, self.key, self.owner, self.ttl_ms))

    def release(self) -> None:
        self.client.eval(self.RELEASE, 1, self.key, self.owner)
