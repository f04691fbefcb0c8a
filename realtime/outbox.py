"""The one write path: ``publish()`` stores a message and fans it out after commit.

``seq`` is allocated by incrementing ``Topic.last_seq`` in the same transaction as the insert:
the UPDATE takes the topic's row lock (PostgreSQL) or the database write lock (SQLite), so
concurrent writers are serialised per topic and ``seq`` has no gaps and no duplicates.
"""

from __future__ import annotations

import logging
import weakref
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

# What ``Source.values`` lists, which the enum builds again on each read (0.05 ms cold).
SOURCES = frozenset(Source.values)

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

    Each topic is claimed: its ``last_seq`` raised by the number of its new messages and its
    row read back in one ``UPDATE … RETURNING`` for all topics that get the same number
    (``_claim``), then one INSERT stores the messages, however many there are.
    """
    if source not in SOURCES:
        raise InvalidMessage(f"Unknown source {source!r}; expected one of {Source.values}.")
    author = user if user is not None and getattr(user, "is_authenticated", False) else None
    checked: list[tuple[Topic | str, Any]] = []
    for topic, data in items:
        reason = payload.problem(data)
        if reason is not None:
            raise InvalidMessage(reason)
        checked.append((topic, data))
    if not checked:
        return []
    with transaction.atomic():
        resolved, last = _claim([topic for topic, _ in checked])
        per_topic = Counter(topic.pk for topic in resolved)
        next_seq = {topic_id: last[topic_id] - count + 1 for topic_id, count in per_topic.items()}
        messages = []
        now = timezone.now()
        for topic_obj, (_, data) in zip(resolved, checked, strict=True):
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
            _insert_one(messages[0])
        else:
            Message.objects.bulk_create(messages)
        for message in messages:
            if message.data is JSON_NULL:
                message.data = None
        transaction.on_commit(partial(fanout.fan_out_after_commit, messages), robust=True)
    return messages


# Where UPDATE … RETURNING exists when Django says INSERT … RETURNING does (not MariaDB).
RETURNING_VENDORS = ("postgresql", "sqlite")


def _returning(connection: Any) -> bool:
    return (
        connection.vendor in RETURNING_VENDORS
        and connection.features.can_return_columns_from_insert
    )


def _claim(topics: list[Topic | str]) -> tuple[list[Topic], dict[int, int]]:
    """In the caller's transaction: each item's topic row (``topics``: slugs or Topic
    objects) with ``last_seq`` raised by its number of new messages, and the new ``last_seq``
    by topic id. Refuses (TopicNotFound) a topic that is missing or disabled.

    A slug is claimed by its enabled row in one ``UPDATE … RETURNING`` (all topics that get
    the same number together), which also reads the row: the ORM's read of the topic was
    1 ms of the 3.2 ms a message waited before Redis's ``PUBLISH`` (bench/notes.md). A slug
    with no enabled row (a family's topic before its first publish, a disabled or missing
    topic), a Topic object, and databases without ``RETURNING`` take ``_resolve`` and
    ``_raise_last_seq``."""
    connection = connections[Topic.objects.db]
    by_slug: Counter[str] = Counter()
    if _returning(connection):
        by_slug.update(topic for topic in topics if isinstance(topic, str))
    claimed = _claim_slugs(connection, by_slug) if by_slug else {}
    rows: dict[Any, Topic] = {}  # the other items' rows, by slug or by the object's id
    per_topic: Counter[int] = Counter()
    resolved = []
    for topic in topics:
        if isinstance(topic, str) and topic in claimed:
            resolved.append(claimed[topic])
            continue
        ident = topic if isinstance(topic, str) else id(topic)
        row = rows.get(ident)
        if row is None:
            row = rows[ident] = _resolve(topic)
            if not row.enabled:
                raise TopicNotFound(f"Topic {row.slug!r} is disabled.")
        per_topic[row.pk] += 1
        resolved.append(row)
    last = {topic.pk: topic.last_seq for topic in claimed.values()}
    if per_topic:
        last.update(_raise_last_seq(per_topic))
    return resolved, last


# What the written-out statements need of a connection (quoted names, the ORM's converters),
# made once per connection object: rebuilt each time it was a fifth of a claim's time.
_prepared: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _prepare(connection: Any, name: str, build: Callable[[Any], Any]) -> Any:
    found = _prepared.get(connection)
    if found is None:
        found = _prepared[connection] = {}
    value = found.get(name)
    if value is None:
        value = found[name] = build(connection)
    return value


def _claim_statement(connection: Any) -> tuple[str, str, list[Any], list[str]]:
    """(the UPDATE up to its slugs, the rest, the converters by column, the field names)."""
    meta = Topic._meta
    quote = connection.ops.quote_name
    fields = meta.concrete_fields
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        converters.extend((index, converter, column) for converter in found)
    last_seq = quote(meta.get_field("last_seq").column)
    slug, enabled = quote(meta.get_field("slug").column), quote(meta.get_field("enabled").column)
    returned = ", ".join(quote(field.column) for field in fields)
    head = f"UPDATE {quote(meta.db_table)} SET {last_seq} = {last_seq} + %s WHERE {slug} IN ("
    tail = f") AND {enabled} RETURNING {returned}"
    return head, tail, converters, [field.attname for field in fields]


def _by_count(counts: Counter[Any]) -> dict[int, list[Any]]:
    """The keys grouped by their count: one statement raises every topic of a group."""
    groups: dict[int, list[Any]] = {}
    for key, count in counts.items():
        groups.setdefault(count, []).append(key)
    return groups


def _claim_slugs(connection: Any, by_slug: Counter[str]) -> dict[str, Topic]:
    """``UPDATE … RETURNING`` of the enabled rows of these slugs (``last_seq`` raised by each
    one's count); the rows by slug, converted as the ORM converts what it reads."""
    by_count = _by_count(by_slug)
    head, tail, converters, names = _prepare(connection, "claim", _claim_statement)
    claimed: dict[str, Topic] = {}
    with connection.cursor() as cursor:
        for count, slugs in by_count.items():
            cursor.execute(head + ", ".join(["%s"] * len(slugs)) + tail, [count, *slugs])
            for row in cursor.fetchall():
                values = list(row)
                for index, converter, column in converters:
                    values[index] = converter(values[index], column, connection)
                topic = Topic.from_db(connection.alias, names, values)
                claimed[topic.slug] = topic
    return claimed


def _insert_one(message: Message) -> None:
    """Store one new message: on databases with ``RETURNING``, the INSERT ``save()`` would
    issue, with the values prepared as ``save()`` prepares them, without the ORM's compiler
    (0.2-0.3 ms of what a message waits before it is sent). No model signals, as for the
    ``bulk_create`` of several messages."""
    connection = connections[Message.objects.db]
    if not _returning(connection):
        message.save(force_insert=True)
        return
    sql, fields = _prepare(connection, "insert", _insert_statement)
    values = [field.get_db_prep_save(field.pre_save(message, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        (message.pk,) = cursor.fetchone()
    message._state.adding = False
    message._state.db = connection.alias


def _insert_statement(connection: Any) -> tuple[str, list[Any]]:
    meta = Message._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"
        f" RETURNING {quote(meta.pk.column)}"
    )
    return sql, fields


def _raise_last_seq(per_topic: Counter[int]) -> dict[int, int]:
    """Raise each topic's ``last_seq`` by its number of new messages (``per_topic``); the new
    values by topic id. One ``UPDATE … RETURNING`` for all topics that get the same number,
    where the database has it (PostgreSQL; SQLite 3.35+), else that UPDATE then a SELECT. A
    message waits on this before it is sent: the ORM's two statements were 1 ms of the
    3.3 ms a publish spent before Redis's ``PUBLISH`` (bench/notes.md)."""
    by_count = _by_count(per_topic)
    connection = connections[Topic.objects.db]
    last: dict[int, int] = {}
    if _returning(connection):
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
