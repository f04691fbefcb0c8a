"""Feeds: registered functions that read the database and return data for a topic.

    from realtime.feeds import feed

    @feed("site-stats", every=10)
    def site_stats():
        return {"users": User.objects.count()}

The scheduler runs each feed when due and publishes a message only when the data differs from
the topic's latest message. Feeds live in ``<app>/feeds.py`` modules, found at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import F

from realtime.protocol import is_valid_slug

logger = logging.getLogger("realtime.feeds")


@dataclass(frozen=True)
class Feed:
    """A function producing the data of ``topic`` every ``every`` seconds."""

    topic: str
    func: Callable[[], Any]
    every: float
    title: str = ""

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


_registry: dict[str, Feed] = {}


def feed(topic: str, *, every: float, title: str = "") -> Callable[[Callable[[], Any]], Callable]:
    """Register the decorated function as the feed of ``topic``, run every ``every`` seconds."""
    if not is_valid_slug(topic):
        raise ValueError(f"Feed topic {topic!r} is not a valid topic slug.")
    if isinstance(every, bool) or not isinstance(every, (int, float)) or every <= 0:
        raise ValueError(f"Feed {topic!r}: every must be a number of seconds > 0, not {every!r}.")

    def register(func: Callable[[], Any]) -> Callable[[], Any]:
        new = Feed(topic, func, float(every), title)
        old = _registry.get(topic)
        if old is not None and old.name != new.name:
            raise ValueError(f"Topic {topic!r} already has the feed {old.name}.")
        _registry[topic] = new
        return func

    return register


def registry() -> dict[str, Feed]:
    """The registered feeds by topic slug."""
    return dict(_registry)


def unregister(topic: str) -> None:
    _registry.pop(topic, None)


def autodiscover() -> None:
    """Import every installed app's ``feeds`` module (the built-in feeds register from
    ``RealtimeConfig.ready``, which imports ``realtime.builtin_feeds``)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("feeds")


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_feed(item: Feed) -> Any:
    """Run one feed now; publish and return the new Message if its data changed, else None."""
    published, failed = run_feeds([item])
    if failed:
        raise failed[0][1]
    return published[0] if published else None


def run_feeds(items: list[Feed]) -> tuple[list[Any], list[tuple[str, Exception]]]:
    """Run feeds; publish in one transaction the data that changed.

    Returns (new messages, [(topic, exception)] of the feeds that failed). One failing feed
    does not stop the others.
    """
    from realtime.models import Message, Source, Topic
    from realtime.outbox import publish_many

    topics = {t.slug: t for t in Topic.objects.filter(slug__in=[i.topic for i in items])}
    for item in items:
        if item.topic not in topics:
            topics[item.topic] = ensure_topic(item)
    live = [t for t in topics.values() if t.enabled and t.last_seq > 0]
    latest = dict(
        Message.objects.filter(topic__in=live, seq=F("topic__last_seq")).values_list(
            "topic_id", "data"
        )
    )
    changed: list[tuple[Any, Any]] = []
    failed: list[tuple[str, Exception]] = []
    for item in items:
        topic = topics[item.topic]
        if not topic.enabled:
            continue
        try:
            data = item.func()
            text = canonical(data)
        except Exception as exc:
            logger.exception("feed %s for topic %s failed", item.name, item.topic)
            failed.append((item.topic, exc))
            continue
        if topic.pk in latest and canonical(latest[topic.pk]) == text:
            continue
        changed.append((topic, data))
    messages = publish_many(changed, source=Source.FEED)
    for message in messages:
        logger.info("feed published %s#%s", message.topic.slug, message.seq)
    return messages, failed


def ensure_topic(item: Feed) -> Any:
    """The feed's topic, created (public, enabled, a ``state`` topic: a feed reports what
    is, and only its latest report matters) when missing."""
    from realtime.models import Topic, TopicKind

    topic, created = Topic.objects.get_or_create(
        slug=item.topic,
        defaults={
            "title": item.title or item.topic.replace("-", " ").title(),
            "kind": TopicKind.STATE,
        },
    )
    if created:
        logger.info("created topic %s for feed %s", item.topic, item.name)
    return topic
