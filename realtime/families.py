"""Topic families: topics per object and per user, declared in code (``family:key``).

An app declares a family in its ``realtime.py`` (imported at start like ``admin.py``)::

    import realtime

    @realtime.family("orders", presence=True)
    class Orders:
        def can_read(user, key):
            return Order.objects.filter(pk=key, owner=user.pk).exists()

        def can_publish(user, key):
            return user.is_staff

Rules take ``(user, key)`` and return a bool; they run in a database thread, never on the
event loop. Left out: ``can_read`` refuses everyone, ``can_publish`` refuses visitors (the
site publishes through ``realtime.publish``), ``can_whisper`` follows ``whispers`` and
``can_read``, presence follows ``presence`` and ``can_read``. A family's topics exist on demand:
subscribing stores nothing; the first publish makes the row (``create_topic``, race-safe).

The built-in family ``user``: ``user:<pk>`` is read only by that user (``realtime.notify``).
This module imports nothing of the app's (``models`` asks it for the rules of a row).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from realtime import protocol

Rule = Callable[[Any, str], bool]
KINDS = ("stream", "state")


class FamilyError(ValueError):
    """A family declared wrongly (a bad name, option or rule)."""


def _nobody(user: Any, key: str) -> bool:
    return False


@dataclass(frozen=True)
class Family:
    """A declared family: its rules and the defaults of its topics' rows."""

    name: str
    can_read: Rule = _nobody
    can_publish: Rule = _nobody
    can_whisper: Rule | None = None  # None: whoever may read, when ``whispers`` is on
    presence: bool = False
    whispers: bool = False
    kind: str = "stream"
    backlog: int | None = None  # None: REALTIME['DEFAULT_BACKLOG']
    retention: int | None = None  # None: REALTIME['DEFAULT_RETENTION']
    title: str = ""
    # The template its messages are rendered with (``realtime/messages/<family>.html`` if
    # None; see realtime.rendering).
    template: str | None = None

    def topic(self, key: str) -> str:
        """The topic name of ``key`` (``ValueError`` when the key is not allowed)."""
        name = f"{self.name}:{key}"
        if not protocol.is_valid_topic(name):
            raise ValueError(
                f"{key!r} is not a key of family {self.name!r}: 1-{protocol.MAX_FAMILY_KEY} "
                "characters of A-Z a-z 0-9 _ . -"
            )
        return name

    def may(self, action: str, user: Any, key: str) -> bool:
        """Ask the rule for ``action`` (read, publish, whisper, presence)."""
        if action == "read":
            return bool(self.can_read(user, key))
        if action == "publish":
            return bool(self.can_publish(user, key))
        if action == "whisper":
            if self.can_whisper is not None:
                return bool(self.can_whisper(user, key))
            return self.whispers and bool(self.can_read(user, key))
        if action == "presence":
            return self.presence and bool(self.can_read(user, key))
        raise ValueError(f"Unknown action {action!r}.")


_registry: dict[str, Family] = {}


def register(found: Family, *, replace: bool = False) -> Family:
    """Add a family (``replace``: over one of the same name, for tests)."""
    if not protocol.is_valid_slug(found.name):
        raise FamilyError(
            f"{found.name!r} is not a family name (1-80 of a-z, 0-9, '-', '_', starting with a "
            "letter or digit)."
        )
    if found.kind not in KINDS:
        raise FamilyError(
            f"Family {found.name!r}: kind must be one of {KINDS}, not {found.kind!r}."
        )
    for name in ("backlog", "retention"):
        value = getattr(found, name)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise FamilyError(f"Family {found.name!r}: {name} must be an int >= 0, not {value!r}.")
    if found.name in _registry and not replace and _registry[found.name] != found:
        raise FamilyError(f"Family {found.name!r} is declared twice.")
    _registry[found.name] = found
    return found


def unregister(name: str) -> None:
    _registry.pop(name, None)


def family(name: str, **options: Any) -> Callable[[Any], Any]:
    """Declare a family from a class holding its rules and options (or from a function, its
    ``can_read``); keyword arguments override the class's attributes."""

    def declare(target: Any) -> Any:
        settings: dict[str, Any] = {}
        if isinstance(target, type):
            for attribute in (
                "can_read",
                "can_publish",
                "can_whisper",
                "presence",
                "whispers",
                "kind",
                "backlog",
                "retention",
                "title",
                "template",
            ):
                if attribute in vars(target):
                    value = vars(target)[attribute]
                    settings[attribute] = (
                        value.__func__ if isinstance(value, staticmethod) else value
                    )
        elif callable(target):
            settings["can_read"] = target
        else:
            raise FamilyError(f"@family({name!r}) decorates a class or a function, not {target!r}.")
        settings.update(options)
        replace = settings.pop("replace", False)
        unknown = set(settings) - set(Family.__dataclass_fields__)
        if unknown:
            raise FamilyError(f"Family {name!r}: unknown option(s) {sorted(unknown)}.")
        for rule in ("can_read", "can_publish", "can_whisper"):
            if rule in settings and settings[rule] is not None and not callable(settings[rule]):
                raise FamilyError(f"Family {name!r}: {rule} must be callable(user, key).")
        register(Family(name, **settings), replace=replace)
        return target

    return declare


def get(name: str) -> Family | None:
    return _registry.get(name)


def all_families() -> list[Family]:
    return sorted(_registry.values(), key=lambda f: f.name)


_SPLIT = re.compile(r"^([^:]+):(.+)\Z", re.S)


def split(topic: str) -> tuple[str, str] | None:
    """(family, key) of a ``family:key`` topic name, None for a slug."""
    found = _SPLIT.match(topic)
    return (found.group(1), found.group(2)) if found else None


def of(topic: str) -> tuple[Family, str] | None:
    """(the declared family, key) of a topic name, None for slugs and unknown families."""
    parts = split(topic)
    if parts is None:
        return None
    declared = _registry.get(parts[0])
    return (declared, parts[1]) if declared is not None else None


# --- the built-in family of each user's own topic -------------------------------------------------

USER_FAMILY = "user"


def _own(user: Any, key: str) -> bool:
    return user is not None and user.is_authenticated and str(user.pk) == key


def user_topic(user: Any) -> str | None:
    """The user's own topic, ``user:<pk>`` (None for anonymous visitors)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return f"{USER_FAMILY}:{user.pk}"


register(Family(USER_FAMILY, can_read=_own, title="Notifications", backlog=20, retention=200))
