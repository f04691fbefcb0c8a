"""Exceptions the realtime app raises to its callers."""


class RealtimeError(Exception):
    """Base class for the app's errors."""


class TopicNotFound(RealtimeError, LookupError):
    """No topic with that slug, or a disabled one."""


class InvalidMessage(RealtimeError, ValueError):
    """The data cannot be stored as a message (not JSON-serialisable, bad source...)."""
