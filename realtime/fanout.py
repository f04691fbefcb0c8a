"""Fan-out: the only module that sends topic events through the channel layer.

Every event carries the message's frame already serialised, so a consumer writes it to its
socket without re-encoding it per connection. The channel layer is a fast path: a message whose
fan-out fails stays unmarked in the outbox and the scheduler's sweep sends it later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from realtime import protocol
from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.fanout")

MESSAGE_EVENT = "realtime.message"
GROUP_PREFIX = "realtime.topic."


def group_name(slug: str) -> str:
    """The channel-layer group of a topic; the slug must have passed ``is_valid_slug``."""
    if not protocol.is_valid_slug(slug):
        raise ValueError(f"{slug!r} is not a valid topic slug.")
    return GROUP_PREFIX + slug


def layer() -> Any:
    return get_channel_layer(realtime_settings.CHANNEL_LAYER)


def message_event(message: Any) -> dict[str, Any]:
    """The channel-layer event for a stored ``Message`` (its topic must be loaded)."""
    slug = message.topic.slug
    return {
        "type": MESSAGE_EVENT,
        "topic": slug,
        "seq": message.seq,
        "frame": protocol.message(slug, message.seq, message.created_at, message.data),
    }


async def send(messages: Iterable[Any]) -> list[int]:
    """Send each message to its topic's group; return the ids sent. Raises on layer failure."""
    channel_layer = layer()
    sent: list[int] = []
    for message in messages:
        await channel_layer.group_send(group_name(message.topic.slug), message_event(message))
        sent.append(message.pk)
    return sent


def mark_fanned_out(ids: list[int]) -> None:
    from realtime.models import Message

    if ids:
        Message.objects.filter(pk__in=ids, fanned_out_at__isnull=True).update(
            fanned_out_at=timezone.now()
        )


def fan_out_after_commit(message: Any) -> None:
    """The after-commit hook of ``publish()``: send now, or leave it to the outbox sweep."""
    try:
        async_to_sync(send)([message])
    except Exception:
        logger.warning(
            "Fan-out of %s#%s failed; the outbox sweep will send it.",
            message.topic.slug,
            message.seq,
            exc_info=True,
        )
        return
    try:
        mark_fanned_out([message.pk])
    except Exception:
        # Sent but not marked: the sweep sends it again and consumers drop the duplicate.
        logger.warning("Could not mark %s as fanned out.", message, exc_info=True)
