"""Which topic channels a hub's Redis connection is subscribed to, and which it should be.

A topic is *held* while the hub has a local subscriber of it. A newly held topic is asked for
in the next batch (one SUBSCRIBE for every topic held since the last one) and a subscriber
waits for Redis to confirm it (``wait``): from then on every message of the topic reaches the
hub, so what it reads from the database next cannot miss one. A topic released after being held
``LINGER_AFTER`` seconds stays subscribed ``LINGER`` seconds (a page reload does not churn
Redis); one only tried (a visitor cycling keys), or one beyond ``MAX_LINGERING``, is dropped at
the next batch. Pure bookkeeping: the hub sends the commands and reads the confirmations.
"""

from __future__ import annotations

import asyncio
import time

LINGER = 5.0  # seconds a topic stays subscribed in Redis after its last local subscriber
LINGER_AFTER = 1.0  # only topics held this long linger
MAX_LINGERING = 10_000  # beyond this many lingering topics, unsubscribe at once


class TopicChannels:
    """One hub's topic subscriptions: confirmed by Redis, asked for, to ask for, lingering."""

    def __init__(self) -> None:
        self.confirmed: set[str] = set()  # subscribed, and no UNSUBSCRIBE sent since
        self.requested: set[str] = set()  # SUBSCRIBE sent on the current connection
        self.to_subscribe: set[str] = set()  # the next batch
        self.lingering: dict[str, float] = {}  # released: slug → when to unsubscribe
        self.held_since: dict[str, float] = {}
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.changes = asyncio.Event()  # something for the next batch

    # --- the hub's local subscribers

    def hold(self, slug: str) -> None:
        """``slug`` has its first local subscriber."""
        if self.lingering.pop(slug, None) is None:
            self.held_since[slug] = time.monotonic()
        if slug not in self.requested:
            self.to_subscribe.add(slug)
            self.changes.set()

    def release(self, slug: str) -> None:
        """``slug`` lost its last local subscriber."""
        self.to_subscribe.discard(slug)
        now = time.monotonic()
        held = now - self.held_since.pop(slug, now)
        if slug in self.requested:
            linger = held >= LINGER_AFTER and len(self.lingering) < MAX_LINGERING
            self.lingering[slug] = now + LINGER if linger else 0.0
            if not linger:
                self.changes.set()

    def held(self, topics: set[str] | dict[str, object]) -> set[str]:
        """Every topic to subscribe to on a new connection: held or lingering."""
        return set(topics) | set(self.lingering)

    async def wait(self, slug: str, timeout: float) -> bool:
        """Wait until Redis confirmed ``slug`` (True), or give up after ``timeout``."""
        if slug in self.confirmed:
            return True
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(slug, []).append(future)
        try:
            async with asyncio.timeout(timeout):  # (wait_for can swallow a cancellation)
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self.waiters.get(slug)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self.waiters[slug]

    # --- the connection's commands and answers

    def connecting(self, held: set[str]) -> None:
        """A new connection subscribes to ``held`` in its first command."""
        self.to_subscribe.clear()
        self.requested = set(held)

    def lost(self) -> None:
        """The connection is gone: nothing is subscribed any more."""
        self.confirmed.clear()
        self.requested.clear()

    def confirm(self, slug: str) -> bool:
        """Redis confirmed ``slug``; True when it was confirmed already (redis-py subscribed
        again by itself after a reconnect: what was published meanwhile was missed)."""
        again = slug in self.confirmed
        self.confirmed.add(slug)
        for future in self.waiters.pop(slug, ()):
            if not future.done():
                future.set_result(True)
        return again

    def unsubscribed(self, slug: str) -> None:
        if slug not in self.requested:  # not asked for again meanwhile
            self.confirmed.discard(slug)

    def next_batch(self, now: float) -> tuple[list[str], list[str]]:
        """(topics to SUBSCRIBE, topics to UNSUBSCRIBE) now; marks them sent."""
        self.changes.clear()
        subscribe = [slug for slug in self.to_subscribe if slug not in self.requested]
        self.to_subscribe.clear()
        self.requested.update(subscribe)
        expired = [slug for slug, until in self.lingering.items() if until <= now]
        for slug in expired:
            del self.lingering[slug]
            self.requested.discard(slug)
            self.confirmed.discard(slug)  # a subscribe from now on waits for Redis
        return subscribe, expired
