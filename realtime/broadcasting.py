"""Model broadcasting: a model's objects kept live, each on its family's topic.

``realtime.broadcasts(Service, family="services", key="slug", template="demo/service.html")``:
after the commit of a save or a delete of an instance, ``services:<slug>`` gets a message with
the object's current state: ``data`` (its fields, JSON) and ``html`` (the template rendered
with ``object`` and ``deleted``). The family should be a ``state`` family (the newest wins) that
visitors may not publish to. ``{% live_topic obj %}`` renders the object now and keeps it live.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.forms.models import model_to_dict
from django.template.loader import render_to_string

from realtime import families

logger = logging.getLogger("realtime.broadcasting")


@dataclass(frozen=True)
class Broadcast:
    """How one model is broadcast."""

    model: Any
    family: str
    key: Callable[[Any], Any]
    template: str | None
    data: Callable[[Any], Any]

    def topic(self, instance: Any) -> str:
        found = families.get(self.family)
        if found is None:
            raise families.FamilyError(f"broadcasts: family {self.family!r} is not declared.")
        return found.topic(str(self.key(instance)))

    def render(self, instance: Any, deleted: bool = False) -> str:
        """The object's rendering (the template, one line; "" without one)."""
        if not self.template:
            return ""
        context = {"object": instance, "deleted": deleted, self.model._meta.model_name: instance}
        return " ".join(render_to_string(self.template, context).split())

    def message(self, instance: Any, deleted: bool) -> dict[str, Any]:
        data = json.loads(json.dumps(self.data(instance), cls=DjangoJSONEncoder))
        return {"object": data, "deleted": deleted}


_registry: dict[Any, Broadcast] = {}


def _fields(instance: Any) -> dict[str, Any]:
    found = model_to_dict(instance)
    found["pk"] = instance.pk
    return found


def broadcasts(
    model: Any,
    *,
    family: str,
    key: str | Callable[[Any], Any] = "pk",
    template: str | None = None,
    data: Callable[[Any], Any] | None = None,
) -> Broadcast:
    """Publish ``model``'s objects to ``family:<key>`` after every committed save and delete.
    ``key``: an attribute name or a function of the instance; ``template``: rendered with
    ``object`` and ``deleted``; ``data``: a function of the instance giving the message's
    ``object`` (default: its fields)."""
    if families.get(family) is None:
        raise families.FamilyError(
            f"broadcasts({model.__name__}): declare the family {family!r} first "
            "(@realtime.family in the same realtime.py, above this call)."
        )
    getter = key if callable(key) else (lambda instance, name=key: getattr(instance, name))
    found = _registry[model] = Broadcast(model, family, getter, template, data or _fields)
    uid = f"realtime.broadcasts.{model._meta.label}"
    post_save.connect(_saved, sender=model, dispatch_uid=uid + ".save", weak=False)
    post_delete.connect(_deleted, sender=model, dispatch_uid=uid + ".delete", weak=False)
    return found


def of(instance: Any) -> Broadcast | None:
    """How ``instance``'s model is broadcast (None when it is not)."""
    return _registry.get(type(instance))


def _saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if not raw:  # not while loading fixtures
        _after_commit(instance, deleted=False)


def _deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _after_commit(instance, deleted=True)


def _after_commit(instance: Any, deleted: bool) -> None:
    found = of(instance)
    if found is None:
        return
    # Rendered now (a deleted object is gone after commit), published after commit.
    try:
        topic = found.topic(instance)
        data, html = found.message(instance, deleted), found.render(instance, deleted)
    except Exception:
        label = instance._meta.label
        logger.exception("broadcasting %s %r failed; not published", label, instance)
        return
    transaction.on_commit(partial(_publish, topic, data, html), robust=True)


def _publish(topic: str, data: Any, html: str) -> None:
    from realtime.outbox import publish

    publish(topic, data, source="api", html=html or None)
