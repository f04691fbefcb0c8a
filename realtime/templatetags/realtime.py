"""``{% load realtime %}{% live_topic "news" limit=10 %}``: a live region without JavaScript of
your own. ``{% live_topic order %}`` (an instance of a model given to ``realtime.broadcasts``)
renders the object now with its broadcast template and replaces it with each new state.

The tag renders the latest ``limit`` messages of the topic on the server (visible without
JavaScript, indexable; each with its stored rendering, ``realtime/messages/<slug>.html``) and
marks the region with the topic and the seq it was rendered at. ``realtime/pages/live.js``
(included by the tag) finds every region on the page and keeps it live: new messages are
inserted in order, resuming after the rendered seq, so nothing published between the render
and the subscribe is lost and nothing shows twice.

Options: ``limit`` (1-100, default 10), ``order`` ("newest-first", the default, or
"oldest-first"), ``mode`` ("append", the default, or "replace": only the latest message, for
dashboards), ``meta`` (show each message's seq and time; default true), ``id`` and ``class``
for the region element, ``empty`` (the text while there is none).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from realtime import broadcasting, rendering
from realtime.models import Topic

register = template.Library()

ORDERS = ("newest-first", "oldest-first")
MODES = ("append", "replace")


@register.inclusion_tag("realtime/live_topic.html", takes_context=True)
def live_topic(
    context: Any,
    slug: str,
    limit: int = 10,
    order: str = "newest-first",
    mode: str = "append",
    meta: bool = True,
    id: str = "",  # noqa: A002 (the region element's id attribute)
    empty: str = "No messages yet.",
    presence: bool = False,
    **attributes: Any,
) -> dict[str, Any]:
    if not isinstance(slug, str):
        return _live_object(context, slug, id, attributes.get("class", ""), presence)
    if order not in ORDERS:
        raise template.TemplateSyntaxError(
            f"live_topic order must be one of {ORDERS}, not {order!r}"
        )
    if mode not in MODES:
        raise template.TemplateSyntaxError(f"live_topic mode must be one of {MODES}, not {mode!r}")
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise template.TemplateSyntaxError(
            f"live_topic limit must be a number, not {limit!r}"
        ) from None
    if not 1 <= limit <= 100:
        raise template.TemplateSyntaxError(f"live_topic limit must be 1-100, not {limit}")
    if mode == "replace":
        limit = 1
    request = context.get("request")
    user = getattr(request, "user", None)
    topic = Topic.objects.enabled().filter(slug=slug).first()
    if topic is None or not topic.can_read(user):
        # Nothing to show, and nothing that tells a private topic from a missing one.
        return {"region": None}
    latest = list(topic.messages.select_related("author", "topic").order_by("-seq")[:limit])
    for message in latest:
        if not message.html:
            message.html = rendering.render(message)  # stored before rendering existed
    if order == "oldest-first":
        latest.reverse()
    return {
        "region": {
            "topic": topic,
            "seq": topic.last_seq,
            "order": order,
            "mode": mode,
            "limit": limit,
            "meta": bool(meta),
            "id": id,
            "css_class": attributes.get("class", ""),
            "empty": empty,
            "messages": latest,
            "slug": topic.slug,
            "presence": bool(presence),
        }
    }


def _live_object(
    context: Any, instance: Any, id: str, css_class: str, presence: bool
) -> dict[str, Any]:
    """The region of one broadcast object: its rendering now, then each new state."""
    found = broadcasting.of(instance)
    if found is None:
        raise template.TemplateSyntaxError(
            f"live_topic needs a topic name or an object of a model given to "
            f"realtime.broadcasts(), not {instance!r}."
        )
    name = found.topic(instance)
    request = context.get("request")
    user = getattr(request, "user", None)
    topic = Topic.objects.filter(slug=name).first() or Topic.unsaved(name)
    if topic is None or not topic.can_read(user):
        return {"region": None}
    html = found.render(instance)
    return {
        "region": {
            "topic": topic,
            "slug": name,
            # One before the latest: the latest state is sent again on subscribe, so a save
            # committed between this rendering and the subscribe is never missed.
            "seq": max(0, topic.last_seq - 1),
            "order": "newest-first",
            "mode": "replace",
            "limit": 1,
            "meta": False,
            "id": id,
            "css_class": " ".join(filter(None, ["live-object", css_class])),
            "empty": "",
            "messages": [{"seq": 0, "html": html}],
            "presence": bool(presence),
        }
    }


def _bad(problem: str) -> template.TemplateSyntaxError:
    return template.TemplateSyntaxError(f"live_topic: {problem}")


@register.simple_tag
def live_region_script() -> str:
    """The script that keeps regions live (``live_topic`` includes it; for pages that add
    regions some other way)."""
    from django.templatetags.static import static

    return format_html('<script type="module" src="{}"></script>', static("realtime/pages/live.js"))
