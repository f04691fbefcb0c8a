"""The one write path: ``publish()`` stores a message and fans it out after commit.

``seq`` is allocated by incrementing ``Topic.last_seq`` in the same transaction as the insert:
the UPDATE takes the topic's row lock (PostgreSQL) or the database write lock (SQLite), so
concurrent writers are serialised per topic and ``seq`` has no gaps and no duplicates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import F, JSONField, Value
from django.utils import timezone

from realtime import fanout, idempotency, metrics, payload, protocol, rendering
from realtime.conf import realtime_settings
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Message, Source, Topic

logger = logging.getLogger("realtime.outbox")

JSON_NULL = Value(None, output_field=JSONField())


def _resolve(topic: Topic | str) -> Topic:
    """The stored row of ``topic``; a family's topic gets its row with its first publish."""
    if isinstance(topic, Topic):
        if topic.pk is not None:
            return topic
        topic = topic.slug  # a family topic read before its first publish (topics.unsaved)
    try:
        return Topic.objects.get(slug=topic)
    except Topic.DoesNotExist:
        created = create_family_topic(topic)
        if created is None:
            raise TopicNotFound(f"No topic {topic!r}.") from None
        return created


def create_family_topic(name: str) -> Topic | None:
    """Make the row of a declared family's topic (None when ``name`` is none). Race-safe: two
    processes publishing first at once make one row (``get_or_create`` takes the other's)."""
    if not isinstance(name, str) or not protocol.is_valid_topic(name):
        return None
    found = Topic.unsaved(name)
    if found is None:
        return None
    defaults = {
        field: getattr(found, field)
        for field in ("family", "kind", "title", "backlog", "retention", "presence", "whispers")
    }
    topic, _ = Topic.objects.get_or_create(slug=name, defaults=defaults)
    return topic


def publish(
    topic: Topic | str,
    data: Any,
    *,
    source: str = Source.API,
    user: Any = None,
    origin: str = "",
    key: str | None = None,
    scope: str | None = None,
    guard: Callable[[], None] | None = None,
    html: str | None = None,
) -> Message:
    """Store ``data`` as the next message of ``topic`` (a slug or Topic) and fan it out: the
    one publish entry of the socket, the HTTP API, the admin, commands and ``realtime.publish``.

    Runs in the caller's transaction; the fan-out happens only after that commits, so a
    rolled-back publish sends nothing. ``guard`` runs inside the transaction before anything
    is stored and may refuse by raising (the API checks there that its token is still
    active). With ``key`` (and its ``scope``, see ``realtime.idempotency``) a key used within
    24 hours answers with that first message and stores nothing (``message.repeated`` is
    True); a key used for another topic raises ``KeyReused``. ``html``: the message's
    rendering made by the caller (a model broadcast) instead of the topic's template.
    """
    if key is None:
        if guard is None:
            message = publish_many(
                [(topic, data)], source=source, user=user, origin=origin, html=html
            )[0]
        else:
            with transaction.atomic():
                guard()
                message = publish_many(
                    [(topic, data)], source=source, user=user, origin=origin, html=html
                )[0]
        message.repeated = False
        return message
    if scope is None:
        raise ValueError("publish(key=...) needs the key's scope (idempotency.scope_of).")
    topic_obj = _resolve(topic)
    seq = idempotency.first(scope, key, topic_obj)
    if seq is not None:
        return _repeated(topic_obj, seq)
    try:
        with transaction.atomic():
            if guard is not None:
                guard()
            idempotency.free_expired(scope, key)
            message = publish_many(
                [(topic_obj, data)], source=source, user=user, origin=origin, html=html
            )[0]
            idempotency.record(scope, key, topic_obj, message.seq)
    except IntegrityError:
        seq = idempotency.first(scope, key, topic_obj)  # another attempt committed first
        if seq is None:
            raise
        return _repeated(topic_obj, seq)
    message.repeated = False
    return message


def _repeated(topic: Topic, seq: int) -> Message:
    """The first publish of a repeated key (an unsaved stand-in if it was pruned since)."""
    message = Message.objects.filter(topic=topic, seq=seq).first() or Message(topic=topic, seq=seq)
    message.topic = topic
    message.repeated = True
    return message


def publish_many(
    items: Iterable[tuple[Topic | str, Any]],
    *,
    source: str = Source.API,
    user: Any = None,
    origin: str = "",
    html: str | None = None,
) -> list[Message]:
    """Store several messages in one transaction (the scheduler's feeds); fan out after commit.

    Each topic's ``last_seq`` is raised by the number of its new messages and read back (one
    ``UPDATE … RETURNING`` for all topics that get the same number, ``_raise_last_seq``), then
    one INSERT stores the messages, however many there are.
    """
    if source not in Source.values:
        raise InvalidMessage(f"Unknown source {source!r}; expected one of {Source.values}.")
    author = user if user is not None and getattr(user, "is_authenticated", False) else None
    resolved: list[tuple[Topic, Any]] = []
    for topic, data in items:
        reason = payload.problem(data)
        if reason is not None:
            raise InvalidMessage(reason)
        topic_obj = _resolve(topic)
        if not topic_obj.enabled:
            raise TopicNotFound(f"Topic {topic_obj.slug!r} is disabled.")
        resolved.append((topic_obj, data))
    if not resolved:
        return []
    per_topic = Counter(topic.pk for topic, _ in resolved)
    with transaction.atomic():
        last = _raise_last_seq(per_topic)
        next_seq = {topic_id: last[topic_id] - count + 1 for topic_id, count in per_topic.items()}
        messages = []
        now = timezone.now()
        for topic_obj, data in resolved:
            seq = next_seq[topic_obj.pk]
            next_seq[topic_obj.pk] = seq + 1
            topic_obj.last_seq = max(topic_obj.last_seq, seq)
            # JSON null: Django would store None as SQL NULL (refused by the NOT NULL column).
            stored = JSON_NULL if data is None else data
            message = Message(
                topic=topic_obj,
                seq=seq,
                data=data,
                source=source,
                author=author,
                created_at=now,
                origin=origin[:120],
            )
            # Rendered once, stored with the message (``html``: the caller's own rendering).
            if html is None:
                message.html = rendering.render(message)
            else:
                message.html = html if len(html) <= rendering.MAX_HTML_CHARS else ""
            message.data = stored
            messages.append(message)
        if len(messages) == 1:
            messages[0].save(force_insert=True)
        else:
            Message.objects.bulk_create(messages)
        for message in messages:
            if message.data is JSON_NULL:
                message.data = None
        transaction.on_commit(partial(fanout.fan_out_after_commit, messages), robust=True)
    return messages


# Where UPDATE … RETURNING exists when Django says INSERT … RETURNING does (not MariaDB).
RETURNING_VENDORS = ("postgresql", "sqlite")


def _raise_last_seq(per_topic: Counter[int]) -> dict[int, int]:
    """Raise each topic's ``last_seq`` by its number of new messages (``per_topic``); the new
    values by topic id. One ``UPDATE … RETURNING`` for all topics that get the same number,
    where the database has it (PostgreSQL; SQLite 3.35+), else that UPDATE then a SELECT. A
    message waits on this before it is sent: the ORM's two statements were 1 ms of the
    3.3 ms a publish spent before Redis's ``PUBLISH`` (bench/notes.md)."""
    by_count: dict[int, list[int]] = {}
    for topic_id, count in per_topic.items():
        by_count.setdefault(count, []).append(topic_id)
    connection = connections[Topic.objects.db]
    last: dict[int, int] = {}
    if (
        connection.vendor in RETURNING_VENDORS
        and connection.features.can_return_columns_from_insert
    ):
        quote = connection.ops.quote_name
        table, pk = quote(Topic._meta.db_table), quote(Topic._meta.pk.column)
        column = quote(Topic._meta.get_field("last_seq").column)
        with connection.cursor() as cursor:
            for count, topic_ids in by_count.items():
                marks = ", ".join(["%s"] * len(topic_ids))
                cursor.execute(
                    f"UPDATE {table} SET {column} = {column} + %s WHERE {pk} IN ({marks})"
                    f" RETURNING {pk}, {column}",
                    [count, *topic_ids],
                )
                last.update(cursor.fetchall())
    else:
        for count, topic_ids in by_count.items():  # usually one UPDATE for every topic
            Topic.objects.filter(pk__in=topic_ids).update(last_seq=F("last_seq") + count)
        last = dict(Topic.objects.filter(pk__in=per_topic).values_list("pk", "last_seq"))
    if len(last) != len(per_topic):
        raise TopicNotFound("A topic was deleted while publishing to it.")
    return last


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
    metrics.SWEPT.inc(len(sent))
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
