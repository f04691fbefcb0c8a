"""Presence: who is on a topic, across tabs, processes and hosts (protocol, third edition).

Each hub keeps a ``Roster`` of its own connections on presence topics and writes it to Redis as
one field of the topic's hash (``keys.roster_key``: members by user, connection count); a hub
that changed its field sends the presence signal on the topic's channel, and every hub with
listeners on the topic reads the hash again (after ``BATCH`` seconds, so a crowd joining at
once costs one diff, not one per join) and sends each listener the difference from what it
showed last: ``presence_diff``. A new listener gets the whole ``presence`` frame.

A member leaves when the last of their connections on the topic on this hub has been gone for
``PRESENCE_GRACE`` seconds (a reload shows nothing); the same user on two hubs is one member.
Hubs beat in ``keys.hubs_alive_key`` every ``BEAT`` seconds; a field of a hub silent for
``ALIVE`` seconds (a process killed) is ignored and removed by whoever reads it, and hubs read
their listened topics again every ``REFRESH`` seconds, so such members leave within seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from realtime import cluster, keys, protocol
from realtime.aio import raise_if_cancelled
from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.members")

MAX_MEMBERS = 100  # members listed in a presence frame (count covers everyone)
BATCH = 0.1  # seconds a presence change waits for others before the diff is sent
CROWD, CROWD_BATCH = 100, 0.5  # with this many listeners on a hub, diffs wait longer
BEAT, ALIVE, REFRESH = 1.0, 5.0, 2.0
ROSTER_TTL = 60  # a roster hash nobody renews goes away


def member_of(user: Any) -> dict[str, Any] | None:
    """The presence member of ``user`` (None for anonymous visitors): ``user``, ``name``,
    ``info`` (``REALTIME['PRESENCE_INFO']``). Runs in a database thread (the hook may query)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = (getattr(user, "get_full_name", lambda: "")() or user.get_username())[:150]
    info: Any = {}
    hook = realtime_settings.PRESENCE_INFO
    if hook:
        from django.utils.module_loading import import_string

        try:
            info = import_string(hook)(user)
            json.dumps(info)
        except Exception:
            logger.exception("PRESENCE_INFO failed for user %s; shown without info", user.pk)
            info = {}
    return {"user": user.pk, "name": name, "info": info if isinstance(info, dict) else {}}


class Roster:
    """One hub's presence: its connections on presence topics, the listeners it tells, and
    what it showed them last."""

    def __init__(self, hub: Any):
        self.hub = hub
        self.tracked: dict[str, dict[Any, dict | None]] = {}  # slug → subscriber → member
        self.leaving: dict[str, dict[Any, tuple[float, dict]]] = {}  # slug → user → (until, m)
        self.listeners: dict[str, set[Any]] = {}
        self.joining: dict[str, set[Any]] = {}  # listeners waiting for their first roster
        self.shown: dict[str, tuple[dict[Any, dict], int]] = {}  # slug → (members, count)
        self.dirty: set[str] = set()
        self.pending: set[str] = set()  # changed topics whose refresh is scheduled
        self.locks: dict[str, asyncio.Lock] = {}
        self.flushing: asyncio.Future | None = None
        self.client: Any = None
        self.tasks: set[asyncio.Task] = set()
        self.frames = 0  # presence frames sent (the benchmark's figure)
        self.sharded = cluster.is_cluster(hub.url)  # SPUBLISH on a Redis Cluster

    # --- Redis --------------------------------------------------------------------------------

    def redis(self) -> Any:
        if self.client is None:
            self.client = cluster.async_client(self.hub.url, socket_connect_timeout=2)
        return self.client

    def _key(self, slug: str) -> str:
        return keys.roster_key(self.hub.prefix, slug)

    async def signal(self, slug: str, payload: bytes) -> None:
        """PUBLISH ``payload`` on the topic's channel (a whisper)."""
        await cluster.topic_publish(
            self.redis(), self.sharded, keys.topic_channel(self.hub.prefix, slug), payload
        )

    # --- this hub's connections ------------------------------------------------------------------

    def track(self, slug: str, subscriber: Any, member: dict | None) -> None:
        """``subscriber`` is on ``slug`` (``member`` None: an anonymous connection)."""
        self.tracked.setdefault(slug, {})[subscriber] = member
        if member is not None:
            self.leaving.get(slug, {}).pop(member["user"], None)
        self._dirty(slug)

    def drop(self, slug: str, subscriber: Any) -> None:
        """``subscriber`` left ``slug`` (the hub calls this for every leave)."""
        joining = self.joining.get(slug)
        if joining is not None:
            joining.discard(subscriber)
            if not joining:
                del self.joining[slug]
        listening = self.listeners.get(slug)
        if listening is not None:
            listening.discard(subscriber)
            if not listening:
                del self.listeners[slug]
                self.shown.pop(slug, None)
        here = self.tracked.get(slug)
        if here is None or subscriber not in here:
            return
        member = here.pop(subscriber)
        if not here:
            del self.tracked[slug]
        if member is not None and not any(
            m is not None and m["user"] == member["user"] for m in here.values()
        ):
            until = time.monotonic() + realtime_settings.PRESENCE_GRACE
            self.leaving.setdefault(slug, {})[member["user"]] = (until, member)
        self._dirty(slug)

    def entry(self, slug: str) -> dict[str, Any]:
        """This hub's field of the topic's roster: its members (those leaving included until
        their grace ends) and its connection count."""
        members: dict[Any, dict] = {}
        for member in self.tracked.get(slug, {}).values():
            if member is not None:
                members.setdefault(member["user"], member)
        for user, (_, member) in self.leaving.get(slug, {}).items():
            members.setdefault(user, member)
        return {"m": list(members.values()), "c": len(self.tracked.get(slug, ()))}

    def _dirty(self, slug: str) -> None:
        self.dirty.add(slug)
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_future()
            self._spawn(self._flush_soon())

    async def flushed(self) -> None:
        """Wait until this hub's changes so far are in Redis."""
        if self.flushing is not None:
            await asyncio.shield(self.flushing)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0)  # the joins of this moment go in one write
        done, self.flushing = self.flushing, None
        slugs, self.dirty = self.dirty, set()
        try:
            await self._write(slugs)
        except Exception as exc:
            self.dirty |= slugs  # written again by the next beat
            logger.warning("hub %s could not write presence (%s)", self.hub.id, exc)
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    async def _write(self, slugs: set[str]) -> None:
        if not slugs:
            return
        pipe = self.redis().pipeline(transaction=False)
        # Alive first: a field is never read before its hub's beat (a new hub is not dead).
        pipe.zadd(keys.hubs_alive_key(self.hub.prefix), {self.hub.id: time.time()})
        for slug in slugs:
            entry = self.entry(slug)
            key = self._key(slug)
            if entry["c"] or entry["m"]:
                pipe.hset(key, self.hub.id, json.dumps(entry, separators=(",", ":")))
                pipe.expire(key, ROSTER_TTL)
            else:
                pipe.hdel(key, self.hub.id)
            channel = keys.topic_channel(self.hub.prefix, slug)
            cluster.topic_publish(pipe, self.sharded, channel, keys.presence_signal())
        await pipe.execute()

    # --- listeners -----------------------------------------------------------------------------

    async def listen(self, slug: str, subscriber: Any) -> None:
        """Send ``subscriber`` who is here (with the next batch: one read of the roster serves
        every listener that joined meanwhile), then a diff whenever it changes."""
        await self.flushed()
        self.joining.setdefault(slug, set()).add(subscriber)
        self.changed(slug)

    def changed(self, slug: str) -> None:
        """A hub wrote the topic's roster: read it again soon, if anyone here listens."""
        if (slug in self.listeners or slug in self.joining) and slug not in self.pending:
            self.pending.add(slug)
            self._spawn(self._refresh_later(slug))

    async def _refresh_later(self, slug: str) -> None:
        crowded = len(self.listeners.get(slug, ())) >= CROWD
        await asyncio.sleep(CROWD_BATCH if crowded else BATCH)
        self.pending.discard(slug)
        if slug in self.listeners or slug in self.joining:
            async with self._lock(slug):
                await self._refresh(slug)

    async def _refresh(self, slug: str) -> None:
        """Read the topic's roster; tell every listener the difference from the last one."""
        try:
            members, count = await self.read(slug)
        except Exception as exc:
            logger.warning("hub %s could not read presence of %s (%s)", self.hub.id, slug, exc)
            if slug not in self.shown:
                entry = self.entry(slug)
                self.shown[slug] = ({m["user"]: m for m in entry["m"]}, entry["c"])
            self._welcome(slug)
            return
        before = self.shown.get(slug)
        self.shown[slug] = (members, count)
        if before is not None:
            old, new = _visible(before[0]), _visible(members)
            joins = [new[user] for user in new if user not in old]
            leaves = [old[user] for user in old if user not in new]
            if joins or leaves or count != before[1]:
                text = protocol.presence_diff(slug, joins, leaves, count)
                for subscriber in list(self.listeners.get(slug, ())):
                    self._send(subscriber, protocol.PRESENCE_DIFF, text)
        self._welcome(slug)

    def _welcome(self, slug: str) -> None:
        """New listeners get the whole roster as now shown, then the diffs from it."""
        joining = self.joining.pop(slug, None)
        if not joining:
            return
        members, count = self.shown[slug]
        text = protocol.presence(slug, _listed(members), count)
        listeners = self.listeners.setdefault(slug, set())
        for subscriber in joining:
            self._send(subscriber, protocol.PRESENCE, text)
            listeners.add(subscriber)

    async def read(self, slug: str) -> tuple[dict[Any, dict], int]:
        """Every live hub's members of ``slug`` (each user once) and their connections."""
        pipe = self.redis().pipeline(transaction=False)
        pipe.hgetall(self._key(slug))
        pipe.zrangebyscore(keys.hubs_alive_key(self.hub.prefix), time.time() - ALIVE, "+inf")
        fields, alive = await pipe.execute()
        alive = {hub.decode() for hub in alive} | {self.hub.id}
        members: dict[Any, dict] = {}
        count, dead = 0, []
        entries = [self.entry(slug)]  # this hub's own, as it is now
        for hub, raw in fields.items():
            hub = hub.decode()
            if hub == self.hub.id:
                continue
            if hub not in alive:
                dead.append(hub)
                continue
            try:
                entries.append(json.loads(raw))
            except ValueError:
                continue
        for entry in entries:
            count += int(entry.get("c", 0))
            for member in entry.get("m", ()):
                members.setdefault(member["user"], member)
        if dead:
            await self.redis().hdel(self._key(slug), *dead)
        return members, count

    def _send(self, subscriber: Any, kind: str, text: str) -> None:
        try:
            subscriber.notice(kind, text)
            self.frames += 1
        except Exception:
            logger.exception("sending presence failed on one connection")

    def _lock(self, slug: str) -> asyncio.Lock:
        lock = self.locks.get(slug)
        if lock is None:
            if len(self.locks) > 10_000:
                self.locks = {s: lk for s, lk in self.locks.items() if lk.locked()}
            lock = self.locks[slug] = asyncio.Lock()
        return lock

    # --- the beat ------------------------------------------------------------------------------

    async def beat(self, now: float) -> None:
        """Every ``BEAT`` seconds: say this hub lives, let graces end, renew its fields, and
        every ``REFRESH`` seconds read listened topics again (a hub may have died)."""
        for slug, users in list(self.leaving.items()):
            for user, (until, _) in list(users.items()):
                if until <= now:
                    del users[user]
                    self._dirty(slug)
            if not users:
                del self.leaving[slug]
        client = self.redis()
        pipe = client.pipeline(transaction=False)
        alive = keys.hubs_alive_key(self.hub.prefix)
        pipe.zadd(alive, {self.hub.id: time.time()})
        pipe.zremrangebyscore(alive, "-inf", time.time() - 10 * ALIVE)
        pipe.expire(alive, 10 * int(ALIVE))
        for slug in set(self.tracked) | set(self.leaving):
            pipe.expire(self._key(slug), ROSTER_TTL)
        await pipe.execute()
        if self.dirty and self.flushing is None:
            self._dirty(next(iter(self.dirty)))

    def rewrite(self) -> None:
        """Write every field of this hub again (Redis came back, perhaps empty)."""
        for slug in set(self.tracked) | set(self.leaving):
            self._dirty(slug)

    async def refresh_all(self) -> None:
        for slug in list(self.listeners):
            async with self._lock(slug):
                await self._refresh(slug)

    async def close(self) -> None:
        """Forget this hub's fields (a clean stop) and close the client."""
        if self.client is None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for slug in set(self.tracked) | set(self.leaving):
                pipe.hdel(self._key(slug), self.hub.id)
            pipe.zrem(keys.hubs_alive_key(self.hub.prefix), self.hub.id)
            await asyncio.wait_for(pipe.execute(), timeout=1.0)
        except BaseException:  # noqa: BLE001 (also CancelledError: we are shutting down)
            pass
        try:
            await asyncio.wait_for(self.client.aclose(), timeout=1.0)
        except BaseException:  # noqa: BLE001
            pass
        self.client = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _visible(members: dict[Any, dict]) -> dict[Any, dict]:
    """The members a frame lists: the first ``MAX_MEMBERS`` by user id."""
    if len(members) <= MAX_MEMBERS:
        return members
    chosen = sorted(members, key=lambda user: (str(type(user)), user))[:MAX_MEMBERS]
    return {user: members[user] for user in chosen}


def _listed(members: dict[Any, dict]) -> list[dict]:
    return list(_visible(members).values())


async def run(hub: Any) -> None:
    """The roster's beat, beside the hub (a companion task) until cancelled."""
    roster = hub.roster
    last_refresh = 0.0
    try:
        while True:
            raise_if_cancelled()
            now = time.monotonic()
            try:
                await roster.beat(now)
                if now - last_refresh >= REFRESH:
                    last_refresh = now
                    await roster.refresh_all()
            except Exception as exc:
                logger.debug("presence beat failed (%s)", exc)
            await asyncio.sleep(BEAT)
    finally:
        await roster.close()
