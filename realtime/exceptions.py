"""Exceptions the realtime app raises to its callers."""


class RealtimeError(Exception):
    """Base class for the app's errors."""


class TopicNotFound(RealtimeError, LookupError):
    """No topic with that slug, or a disabled one."""


class InvalidMessage(RealtimeError, ValueError):
    """The data cannot be stored as a message (not JSON-serialisable, bad source...)."""


class KeyReused(InvalidMessage):
    """An idempotency key used within its window for a publish to another topic."""


class PublishRefused(RealtimeError, PermissionError):
    """A check inside the publish's transaction refused it (a token revoked meanwhile)."""
