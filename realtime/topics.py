"""What the connections read: topic rows (cached per process) with the read decision, the
publish rule asked off the event loop, message pages, latest seqs and heads.

Thousands of visitors subscribing to the same topic need one query, not thousands: rows are
cached for ``CACHE_SECONDS``. Saving or deleting a topic in this process drops its entry at
once (signals connected in ``RealtimeConfig.ready``); other processes see a change within
``CACHE_SECONDS``, and access changes reach open sockets through ``realtime.access``. The
rules (read, publish, whisper, presence) are asked in a database thread where they may query
(private topics, family rules) and cached per connection until an access change names the
topic, its family or the user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from realtime import protocol
from realtime.models import Topic

CACHE_SECONDS = 1.0
CACHE_SIZE = 10_000
RULES_PER_CONNECTION = 4_000  # a connection's cached rule answers (then it starts again)
_cache: dict[str, tuple[float, Topic]] = {}


def forget(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """Drop ``instance``'s cached row (every row without one); a signal receiver."""
    if instance is None:
        _cache.clear()
    else:
        _cache.pop(instance.slug, None)


def drop(slug: str) -> None:
    """Forget the cached row of ``slug``."""
    _cache.pop(slug, None)


@database_sync_to_async
def _fetch(slug: str) -> Topic | None:
    return Topic.objects.enabled().filter(slug=slug).first()


def _answer(topic: Topic, action: str, user: Any) -> bool:
    """``topic``'s rule for ``action`` (read, publish, whisper, presence)."""
    if action == "read":
        return topic.can_read(user)
    if action == "publish":
        return topic.can_publish(user)
    return topic.allows(action, user)


async def rule(topic: Topic, action: str, user: Any, cache: dict | None = None) -> bool:
    """``topic``'s answer for ``user`` and ``action`` (read, publish, whisper, presence), in a
    database thread when it may query (family rules, private topics), else at once;
    ``cache``: a connection's answers, by (slug, action), until its access changes."""
    if cache is not None and (topic.slug, action) in cache:
        return cache[(topic.slug, action)]
    if topic.family or topic.private:
        answer = await database_sync_to_async(_answer)(topic, action, user)
    else:
        answer = _answer(topic, action, user)  # no query for a public slug topic
    if cache is not None:
        if len(cache) >= RULES_PER_CONNECTION:
            cache.clear()
        cache[(topic.slug, action)] = answer
    return answer


@dataclass(frozen=True, slots=True)
class Access:
    """What a user may do with a topic. ``topic`` is None when the user may not know it
    exists (missing, disabled, or private and not theirs: answered alike, ``not_found``)."""

    topic: Topic | None
    exists: bool = False  # for messages to someone who could read it before

    @property
    def refusal(self) -> str:
        """The code telling a former reader why it lost the topic."""
        return protocol.FORBIDDEN if self.exists else protocol.NOT_FOUND


async def access(slug: str, user: Any, *, fresh: bool = False, cache: dict | None = None) -> Access:
    """The user's access to ``slug`` (``fresh``: bypass the row cache). A family's topic that
    nobody has published to yet is an unsaved row (``Topic.unsaved``, pk None); its read rule
    decides (``cache``: the connection's answers)."""
    now = time.monotonic()
    cached = None if fresh else _cache.get(slug)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        topic = cached[1]
    else:
        topic = await _fetch(slug)
        if topic is None:
            _cache.pop(slug, None)
            # Not cached: the first publish may make the row any moment.
            topic = Topic.unsaved(slug)
            if topic is None:
                return Access(None)
        else:
            if len(_cache) >= CACHE_SIZE:
                _cache.clear()
            _cache[slug] = (now, topic)
    if (topic.private or topic.family) and not await rule(topic, "read", user, cache):
        return Access(None, exists=True)
    return Access(topic, exists=True)


# --- the consumers' other reads (each a database thread call) ------------------------------------


@database_sync_to_async
def latest_seq(topic_id: int | None) -> int:
    return Topic.objects.latest_seq(topic_id) if topic_id is not None else 0


@database_sync_to_async
def topic_id(slug: str) -> int | None:
    """The row id of ``slug`` (a family topic's row appears with its first publish)."""
    return Topic.objects.filter(slug=slug).values_list("pk", flat=True).first()


def heads(slugs: list[str]) -> dict[str, int]:
    """The latest seq of each of these topics (the hub's resync; run in a thread)."""
    from django.db import close_old_connections

    close_old_connections()
    return Topic.objects.heads(slugs)
