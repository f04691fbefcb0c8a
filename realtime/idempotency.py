"""Publishing exactly once with an idempotency key.

A client that did not get an answer (a timeout, a dropped socket) publishes again with the
same key; within ``WINDOW`` the same key from the same scope answers with the first publish's
topic and seq and stores nothing new. The key's row is written in the publish's own
transaction, and a unique constraint on (scope, key) settles two concurrent attempts: the
second rolls back its message and answers with the first one's.

Scopes: ``user:<id>`` for signed-in users, ``session:<key>`` for anonymous visitors with a
session, ``anonymous`` for the rest (keys from the JS client are random UUIDs, which nobody
else can guess), ``token:<id>`` for the HTTP API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime.models import IdempotentPublish, Topic
from realtime.outbox import publish

WINDOW = timedelta(hours=24)


def scope_of(user: Any, session_key: str | None) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return "anonymous"


def publish_once(
    scope: str,
    key: str,
    topic: Topic | str,
    data: Any,
    *,
    source: str,
    user: Any = None,
    origin: str = "",
) -> tuple[str, int, bool]:
    """(topic slug, seq, stored now): publish unless ``key`` was used in ``scope`` within
    ``WINDOW``, in which case answer with that first publish. Raises what ``publish`` raises."""
    found = _first(scope, key)
    if found is not None:
        return found.topic.slug, found.seq, False
    try:
        with transaction.atomic():
            # An expired use of the key frees it.
            IdempotentPublish.objects.filter(
                scope=scope, key=key, created_at__lt=timezone.now() - WINDOW
            ).delete()
            message = publish(topic, data, source=source, user=user, origin=origin)
            IdempotentPublish.objects.create(
                scope=scope, key=key, topic=message.topic, seq=message.seq
            )
    except IntegrityError:
        found = _first(scope, key)  # another attempt with the key committed first
        if found is None:
            raise
        return found.topic.slug, found.seq, False
    return message.topic.slug, message.seq, True


def _first(scope: str, key: str) -> IdempotentPublish | None:
    return (
        IdempotentPublish.objects.filter(
            scope=scope, key=key, created_at__gte=timezone.now() - WINDOW
        )
        .select_related("topic")
        .first()
    )


def prune() -> int:
    """Forget keys older than ``WINDOW``; return how many."""
    deleted, _ = IdempotentPublish.objects.filter(created_at__lt=timezone.now() - WINDOW).delete()
    return deleted
