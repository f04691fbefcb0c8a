"""The one write path: ``publish()`` stores a message and fans it out after commit.

``seq`` is allocated by incrementing ``Topic.last_seq`` in the same transaction as the insert:
the UPDATE takes the topic's row lock (PostgreSQL) or the database write lock (SQLite), so
concurrent writers are serialised per topic and ``seq`` has no gaps and no duplicates.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from realtime import fanout
from realtime.conf import realtime_settings
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Message, Source, Topic

logger = logging.getLogger("realtime.outbox")


def _resolve(topic: Topic | str) -> Topic:
    if isinstance(topic, Topic):
        return topic
    try:
        return Topic.objects.get(slug=topic)
    except Topic.DoesNotExist:
        raise TopicNotFound(f"No topic {topic!r}.") from None


def publish(
    topic: Topic | str, data: Any, *, source: str = Source.API, user: Any = None
) -> Message:
    """Store ``data`` as the next message of ``topic`` (a slug or Topic) and fan it out.

    Runs in the caller's transaction; the fan-out happens only after that commits, so a
    rolled-back publish sends nothing.
    """
    if source not in Source.values:
        raise InvalidMessage(f"Unknown source {source!r}; expected one of {Source.values}.")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"Message data must be JSON-serialisable: {exc}") from None
    author = user if user is not None and getattr(user, "is_authenticated", False) else None
    topic_obj = _resolve(topic)
    if not topic_obj.enabled:
        raise TopicNotFound(f"Topic {topic_obj.slug!r} is disabled.")
    with transaction.atomic():
        updated = Topic.objects.filter(pk=topic_obj.pk).update(last_seq=F("last_seq") + 1)
        if not updated:
            raise TopicNotFound(f"Topic {topic_obj.slug!r} no longer exists.")
        seq = Topic.objects.filter(pk=topic_obj.pk).values_list("last_seq", flat=True).get()
        message = Message.objects.create(
            topic=topic_obj, seq=seq, data=data, source=source, author=author
        )
        topic_obj.last_seq = seq
        transaction.on_commit(partial(fanout.fan_out_after_commit, message), robust=True)
    return message


def pending(limit: int | None = None) -> list[Message]:
    """Stored messages still waiting for fan-out past the grace period, oldest first."""
    cutoff = timezone.now() - timedelta(seconds=realtime_settings.OUTBOX_GRACE)
    qs = (
        Message.objects.filter(fanned_out_at__isnull=True, created_at__lte=cutoff)
        .select_related("topic")
        .order_by("created_at", "pk")
    )
    return list(qs[: limit or realtime_settings.OUTBOX_BATCH])


async def sweep() -> int:
    """Send what the after-commit fan-out missed; return how many were sent."""
    from asgiref.sync import sync_to_async

    messages = await sync_to_async(pending)()
    if not messages:
        return 0
    sent = await fanout.send(messages)
    await sync_to_async(fanout.mark_fanned_out)(sent)
    logger.info("Outbox sweep sent %d message(s).", len(sent))
    return len(sent)


def prune(topic: Topic) -> int:
    """Delete messages of ``topic`` beyond its retention; return how many."""
    cutoff = topic.last_seq - topic.retention
    if cutoff <= 0:
        return 0
    # Only what was fanned out: a message still in the outbox is sent before it goes.
    deleted, _ = Message.objects.filter(
        topic=topic, seq__lte=cutoff, fanned_out_at__isnull=False
    ).delete()
    return deleted
