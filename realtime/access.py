"""Access that ends while a socket is open: revocation announced to every process.

When a user's session ends (logout, session deleted, password changed, account deactivated or
deleted) every socket it opened is closed with 4401; when only a topic's read access ends
(removed from the topic's group, the topic made private, disabled or deleted) the socket is
told ``unsubscribed`` for that topic and stays open. The process that makes the change announces
it after commit on a Redis channel (``fanout.announce_access_change``); every hub hands it to
its connections (``Connection.access_changed``), which re-check against the database. A hub
that lost Redis re-checks every signed-in connection when it is back, so an announcement
missed meanwhile is not lost.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, get_user_model, user_logged_out
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from realtime import fanout
from realtime.models import Topic

logger = logging.getLogger("realtime.access")


class _SessionRequest:
    """The one attribute ``django.contrib.auth.get_user`` reads of a request."""

    def __init__(self, session: Any):
        self.session = session


def session_user_id(session_key: str | None) -> Any:
    """The pk of the user that ``session_key`` authenticates now, by Django's own rule (the
    session exists, its auth hash matches the user's password, the user is active), or None."""
    if not session_key:
        return None
    engine = import_module(settings.SESSION_ENGINE)
    user = get_user(_SessionRequest(engine.SessionStore(session_key)))
    return user.pk if user.is_authenticated else None


@database_sync_to_async
def current_user(session_key: str | None, user_id: Any) -> Any:
    """The user behind the session now, or None when it no longer authenticates ``user_id``."""
    if user_id is None or session_user_id(session_key) != user_id:
        return None
    return get_user_model()._default_manager.filter(pk=user_id).first()


def concerns(event: dict[str, Any], user_id: Any, session_key: str | None, topics: Any):
    """What a connection must re-check for an access event: (its session?, which of its
    ``topics``). Anonymous connections have no session to lose."""
    everything = bool(event.get("all"))
    session = user_id is not None and (
        everything or session_key in event.get("sessions", ()) or user_id in event.get("users", ())
    )
    if session or everything:
        return session, list(topics)
    named = set(event.get("topics", ()))
    named_families = set(event.get("families", ()))
    return False, [
        slug
        for slug in topics
        if slug in named or (":" in slug and slug.partition(":")[0] in named_families)
    ]


def changed(name: str) -> None:
    """``realtime.access_changed``: the read rules of topic ``name`` (``family:key`` or a slug)
    or of every topic of family ``name`` may answer differently now. Announced to every
    process after the current transaction commits; open subscriptions that lost access get
    ``unsubscribed`` with a code."""
    from realtime import protocol

    if not protocol.is_valid_topic(name):
        raise ValueError(f"{name!r} is neither a topic name nor a family name.")
    if ":" in name:
        _announce(topics=[name])
    else:
        _announce(topics=[name], families=[name])


def _announce(**change: Any) -> None:
    def send() -> None:
        try:
            fanout.announce_access_change(**change)
        except Exception:
            # Hubs re-check every connection when their Redis subscription returns.
            logger.warning("could not announce an access change %s", change, exc_info=True)

    transaction.on_commit(send, robust=True)


# --- signal receivers (connected in RealtimeConfig.ready) ----------------------------------------


def user_logged_out_receiver(sender: Any, request: Any = None, user: Any = None, **kw: Any) -> None:
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        _announce(sessions=[key])


def session_deleted(sender: Any, instance: Session, **kw: Any) -> None:
    _announce(sessions=[instance.session_key])


def user_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kw: Any):
    # A login only stamps last_login: nothing to re-check then.
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    _announce(users=[instance.pk])


def user_deleted(sender: Any, instance: Any, **kw: Any) -> None:
    _announce(users=[instance.pk])


def user_groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set=None, **kw):
    if action not in ("post_remove", "post_clear", "post_add"):
        return
    if reverse:  # group.user_set changed: instance is the group
        users = list(pk_set or ()) if action != "post_clear" else []
        _announce(users=users, everything=action == "post_clear")
    else:
        _announce(users=[instance.pk])


def topic_groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set=None, **kw):
    if action not in ("post_remove", "post_clear", "post_add"):
        return
    if reverse:  # group.realtime_topics changed: instance is the group
        slugs = list(Topic.objects.filter(pk__in=pk_set or ()).values_list("slug", flat=True))
        _announce(topics=slugs, everything=action == "post_clear")
    else:
        _announce(topics=[instance.slug])


def topic_changed(sender: Any, instance: Topic, created: bool = False, **kw: Any) -> None:
    if not created:
        _announce(topics=[instance.slug])


def group_deleted(sender: Any, instance: Group, **kw: Any) -> None:
    _announce(everything=True)


def connect_signals() -> None:
    user_model = get_user_model()
    user_logged_out.connect(user_logged_out_receiver, dispatch_uid="realtime.access.logout")
    post_delete.connect(session_deleted, sender=Session, dispatch_uid="realtime.access.session")
    post_save.connect(user_saved, sender=user_model, dispatch_uid="realtime.access.user_saved")
    post_delete.connect(user_deleted, sender=user_model, dispatch_uid="realtime.access.user_del")
    if hasattr(user_model, "groups"):
        m2m_changed.connect(
            user_groups_changed,
            sender=user_model.groups.through,
            dispatch_uid="realtime.access.user_groups",
        )
    m2m_changed.connect(
        topic_groups_changed, sender=Topic.groups.through, dispatch_uid="realtime.access.topics"
    )
    post_save.connect(topic_changed, sender=Topic, dispatch_uid="realtime.access.topic_saved")
    post_delete.connect(topic_changed, sender=Topic, dispatch_uid="realtime.access.topic_del")
    post_delete.connect(group_deleted, sender=Group, dispatch_uid="realtime.access.group_del")
