"""Fan-out: the only module that sends topic messages to subscribers.

A stored message becomes one Redis PUBLISH carrying its frame, already serialised, so no
process or connection re-encodes it (see ``realtime.engine`` for the receiving side). Redis is
a fast path: a message whose fan-out fails stays unmarked in the outbox and the scheduler's
sweep sends it later; consumers drop the duplicate if both arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from realtime import engine, protocol

logger = logging.getLogger("realtime.fanout")


def frame(message: Any) -> str:
    """The ``message`` frame of a stored ``Message`` (its topic must be loaded)."""
    return protocol.message(message.topic.slug, message.seq, message.created_at, message.data)


def send_now(messages: Iterable[Any]) -> list[int]:
    """Publish the messages (one pipeline); return their ids. Raises when Redis fails."""
    batch = list(messages)
    engine.publish_sync((m.topic.slug, m.seq, frame(m)) for m in batch)
    return [m.pk for m in batch]


async def send(messages: Iterable[Any]) -> list[int]:
    """``send_now`` from async code (the scheduler)."""
    return await sync_to_async(send_now, thread_sensitive=False)(list(messages))


def mark_fanned_out(ids: list[int]) -> None:
    from realtime.models import Message

    if ids:
        Message.objects.filter(pk__in=ids, fanned_out_at__isnull=True).update(
            fanned_out_at=timezone.now()
        )


def fan_out_after_commit(messages: list[Any]) -> None:
    """The after-commit hook of ``publish()``: send now, or leave it to the outbox sweep."""
    try:
        ids = send_now(messages)
    except Exception:
        logger.warning(
            "Fan-out of %s failed; the outbox sweep will send it.",
            ", ".join(f"{m.topic.slug}#{m.seq}" for m in messages[:5]),
            exc_info=True,
        )
        return
    try:
        mark_fanned_out(ids)
    except Exception:
        # Sent but not marked: the sweep sends it again and consumers drop the duplicate.
        logger.warning("Could not mark %d message(s) as fanned out.", len(ids), exc_info=True)


def announce_heads(heads: dict[str, int]) -> None:
    """Tell every process the latest seq of these topics, so a lost last message is fetched."""
    engine.announce_heads_sync(heads)


def subscriber_count(slug: str) -> int:
    return engine.subscriber_count(slug)
