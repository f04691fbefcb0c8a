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
    """Import the built-in feeds and every installed app's ``feeds`` module."""
    from django.utils.module_loading import autodiscover_modules

    from realtime import builtin_feeds  # noqa: F401

    autodiscover_modules("feeds")


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_feed(item: Feed) -> Any:
    """Run one feed now; publish and return the new Message if its data changed, else None."""
    from realtime.models import Message, Source, Topic
    from realtime.outbox import publish

    topic = Topic.objects.filter(slug=item.topic).first() or ensure_topic(item)
    if not topic.enabled:
        return None
    data = item.func()
    latest = (
        Message.objects.filter(topic=topic).order_by("-seq").values_list("data", flat=True).first()
    )
    if latest is not None and canonical(latest) == canonical(data):
        return None
    message = publish(topic, data, source=Source.FEED)
    logger.info("feed %s published %s#%s", item.name, topic.slug, message.seq)
    return message


def ensure_topic(item: Feed) -> Any:
    """The feed's topic, created (public, enabled) when missing."""
    from realtime.models import Topic

    topic, created = Topic.objects.get_or_create(
        slug=item.topic, defaults={"title": item.title or item.topic.replace("-", " ").title()}
    )
    if created:
        logger.info("created topic %s for feed %s", item.topic, item.name)
    return topic
