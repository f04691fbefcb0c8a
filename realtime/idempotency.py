"""The idempotency-key store under ``outbox.publish(..., key=, scope=)``.

A client that did not get an answer (a timeout, a dropped socket) publishes again with the
same key; within ``WINDOW`` the same key from the same scope answers with the first publish's
seq and stores nothing new. The key's row is written in the publish's own transaction, and a
unique constraint on (scope, key) settles two concurrent attempts: the second rolls back its
message and answers with the first one's. A key used before for *another* topic is refused
(``KeyReused``): it names no message of the topic asked for.

Scopes: ``user:<id>`` for signed-in users, ``session:<key>`` for anonymous visitors with a
session, ``anonymous`` for the rest (keys from the JS client are random UUIDs, which nobody
else can guess), ``token:<id>`` for the HTTP API.

This module only stores and reads keys: it imports nothing of the publish path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from realtime.exceptions import KeyReused
from realtime.models import IdempotentPublish, Topic

WINDOW = timedelta(hours=24)


def scope_of(user: Any, session_key: str | None) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return "anonymous"


def first(scope: str, key: str, topic: Topic) -> int | None:
    """The seq of ``key``'s first publish in ``scope`` within ``WINDOW`` (None: unused).
    Raises ``KeyReused`` when that publish went to another topic."""
    found = (
        IdempotentPublish.objects.filter(
            scope=scope, key=key, created_at__gte=timezone.now() - WINDOW
        )
        .select_related("topic")
        .first()
    )
    if found is None:
        return None
    if found.topic_id != topic.pk:
        raise KeyReused(
            f"The key {key!r} was used for a publish to {found.topic.slug!r} (seq {found.seq}); "
            f"use a new key for {topic.slug!r}."
        )
    return found.seq


def free_expired(scope: str, key: str) -> None:
    """An expired use of the key frees it (inside the publish's transaction)."""
    IdempotentPublish.objects.filter(
        scope=scope, key=key, created_at__lt=timezone.now() - WINDOW
    ).delete()


def record(scope: str, key: str, topic: Topic, seq: int) -> None:
    """Remember the key's publish; raises ``IntegrityError`` when another attempt with the
    same key committed first."""
    IdempotentPublish.objects.create(scope=scope, key=key, topic=topic, seq=seq)


def prune() -> int:
    """Forget keys older than ``WINDOW``; return how many."""
    deleted, _ = IdempotentPublish.objects.filter(created_at__lt=timezone.now() - WINDOW).delete()
    return deleted
