"""Tokens of the HTTP publish API: made once (the secret shown then, only its SHA-256 kept),
looked up by hash, revoked by name."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from realtime.exceptions import PublishRefused
from realtime.models import ApiToken, Topic

PREFIX = "rt_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def create(
    name: str, topics: Iterable[str] = (), families: Iterable[str] = ()
) -> tuple[ApiToken, str]:
    """A new token named ``name`` for ``topics`` (slugs) and the topics of ``families`` (none
    of either: every topic); returns it and its secret. Raises ``ValueError`` for a taken
    name, an unknown topic or an undeclared family."""
    from realtime import families as declared

    unknown = sorted({f for f in families if declared.get(f) is None})
    if unknown:
        names = ", ".join(f.name for f in declared.all_families())
        raise ValueError(f"No family {', '.join(map(repr, unknown))}; declared: {names}.")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("A token needs a name of 1-100 characters.")
    if ApiToken.objects.filter(name=name).exists():
        raise ValueError(f"There is already a token named {name!r}.")
    slugs = sorted(set(topics))
    found = list(Topic.objects.filter(slug__in=slugs))
    missing = sorted(set(slugs) - {t.slug for t in found})
    if missing:
        raise ValueError(f"No topic {', '.join(map(repr, missing))}.")
    secret = new_secret()
    token = ApiToken.objects.create(
        name=name,
        prefix=secret[:10],
        token_hash=digest(secret),
        families=" ".join(sorted(set(families))),
    )
    token.topics.set(found)
    return token, secret


LAST_USED_EVERY = timedelta(minutes=1)  # how often a token's last use is written


def authenticate(secret: str) -> ApiToken | None:
    """The active token with this secret, or None. Its last use is recorded at most once
    every ``LAST_USED_EVERY`` (a write per request would serialise a busy token's requests on
    its row)."""
    token = ApiToken.objects.filter(token_hash=digest(secret), revoked_at__isnull=True).first()
    if token is not None:
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
    return token


def hold(token: ApiToken) -> None:
    """Inside a publish's transaction: raise ``PublishRefused`` unless ``token`` is still
    active, and keep it so until the transaction ends.

    On PostgreSQL the row is read ``FOR SHARE``: a revoke (an UPDATE of the row) waits for
    every publish that read it active, and every publish that starts later sees the revoke.
    So once ``revoke`` returns, nothing more is stored with the token. SQLite serialises
    writing transactions anyway (IMMEDIATE), so a plain read gives the same order.
    """
    table = connection.ops.quote_name(ApiToken._meta.db_table)
    lock = " FOR SHARE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT revoked_at FROM {table} WHERE id = %s{lock}", [token.pk])
        row = cursor.fetchone()
    if row is None or row[0] is not None:
        raise PublishRefused(f"The token {token.name!r} was revoked.")


def revoke(name: str) -> ApiToken:
    """Revoke the token named ``name``; raises ``ApiToken.DoesNotExist``."""
    token = ApiToken.objects.get(name=name)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token
