"""Real-time topics over WebSockets for Django Channels.

``publish()`` is the one write path: it stores a message in the caller's transaction and fans it
out to subscribers after commit. ``family`` declares topics per object (``orders:42``),
``notify`` writes to a user's own topic, ``broadcasts`` keeps a model's objects live, and
``access_changed`` tells open subscriptions that a read rule may answer differently now.
"""

from typing import Any

from realtime.families import family


def publish(topic: Any, data: Any, *, source: str = "api", user: Any = None) -> Any:
    """Store ``data`` as the next message of ``topic`` (a slug, ``family:key`` or a Topic)
    and fan it out after commit; the first publish to a family's topic makes its row."""
    from realtime.outbox import publish as _publish

    return _publish(topic, data, source=source, user=user)


def notify(user: Any, data: Any, *, source: str = "api") -> Any:
    """Publish ``data`` to ``user``'s own topic, ``user:<pk>`` (the notifications bell)."""
    from realtime.families import user_topic

    topic = user_topic(user)
    if topic is None:
        raise ValueError(f"notify() needs a signed-in user, not {user!r}.")
    return publish(topic, data, source=source)


def access_changed(name: str) -> None:
    """The read rules of topic ``name`` (or of every topic of family ``name``) may answer
    differently now: every process re-checks its open subscriptions, after commit."""
    from realtime.access import changed

    changed(name)


def broadcasts(model: Any, **options: Any) -> Any:
    """Keep ``model``'s objects live: see ``realtime.broadcasting.broadcasts``."""
    from realtime.broadcasting import broadcasts as _broadcasts

    return _broadcasts(model, **options)


__all__ = ["access_changed", "broadcasts", "family", "notify", "publish"]
