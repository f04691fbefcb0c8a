"""The feeds the site ships: a clock and counts from the database."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from realtime.feeds import feed


@feed("clock", every=5, title="Clock")
def clock() -> dict[str, Any]:
    """The server's time, to the second: a new message every 5 seconds."""
    now = timezone.now().replace(microsecond=0)
    return {"time": now.isoformat().replace("+00:00", "Z"), "epoch": int(now.timestamp())}


@feed("site-stats", every=10, title="Site statistics")
def site_stats() -> dict[str, int]:
    """Counts from the database; a message only when one of them changes."""
    from realtime.models import Message, Topic

    return {
        "topics": Topic.objects.count(),
        "messages": Message.objects.exclude(topic__slug__in=["clock", "site-stats"]).count(),
        "users": get_user_model().objects.count(),
    }
