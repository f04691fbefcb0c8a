"""Real-time topics over WebSockets for Django Channels.

``publish()`` is the one write path: it stores a message in the caller's transaction and fans it
out to subscribers after commit.
"""

from typing import Any


def publish(topic: Any, data: Any, *, source: str = "api", user: Any = None) -> Any:
    """Store ``data`` as the next message of ``topic`` and fan it out after commit."""
    from realtime.outbox import publish as _publish

    return _publish(topic, data, source=source, user=user)


__all__ = ["publish"]
