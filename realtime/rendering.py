"""Messages rendered by their topic's template, once per message, when they are stored.

The template is ``realtime/messages/<slug>.html`` when it exists (for a family's topic
``family:key``: the family's ``template``, else ``realtime/messages/<family>.html``), else
``realtime/messages/default.html`` (a project's ``templates/`` overrides the app's, as in the
Django admin). Context: ``message``
(``seq``, ``created_at``, ``source``, ``author``), ``data`` and ``topic``. Autoescaping is on:
data never becomes markup. The rendering is stored with the message (``Message.html``) and
carried by its frame (``html``), so live delivery, replays and gap fills send it without
rendering again. A model broadcast (``realtime.broadcasting``) brings its own rendering. The
app's own ``default.html``, when it is what the lookup finds, is written by ``render_default``
(the same string, without the engine's cost).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.template.loader import select_template
from django.utils.html import conditional_escape
from django.utils.timezone import template_localtime

from realtime import families
from realtime.templatetags.realtime_tags import data_text

logger = logging.getLogger("realtime.rendering")

MAX_HTML_CHARS = 20_000  # a rendering longer than this is not sent (data alone still is)


def template_names(slug: str) -> list[str]:
    name = slug.partition(":")[0]  # a family's topics share the family's template
    declared = families.get(name) if ":" in slug else None
    if declared is not None and declared.template:
        return [declared.template, "realtime/messages/default.html"]
    return [f"realtime/messages/{name}.html", "realtime/messages/default.html"]


# The template found for each first name (a topic's, or its family's), with DEBUG off: the
# lookup was 0.1 ms of a publish's wait. DEBUG on looks up every time (templates edited while
# the site runs); a changed TEMPLATES or DEBUG setting empties it.
_found: dict[str, Any] = {}
FOUND_MAX = 1024


def template_for(slug: str) -> Any:
    names = template_names(slug)
    if settings.DEBUG:
        return select_template(names)
    template = _found.get(names[0])
    if template is None:
        if len(_found) >= FOUND_MAX:
            _found.clear()
        template = _found[names[0]] = select_template(names)
    return template


def _forget(setting: str, **kwargs: Any) -> None:
    if setting in ("TEMPLATES", "DEBUG"):
        _found.clear()


setting_changed.connect(_forget, dispatch_uid="realtime.rendering.forget")


# The app's own default template, and the text of it that ``render_default`` writes out (a
# changed file is rendered by the engine until ``render_default`` follows it:
# tests/test_rendering.py).
DEFAULT_TEMPLATE = str(Path(__file__).parent / "templates/realtime/messages/default.html")
DEFAULT_TEMPLATE_SHA256 = "5e53d548cc225e9cb8f2429aa076058793251966dfe15847ccf23919abdc1268"


def is_apps_default(template: Any) -> bool:
    """``template`` is the app's own ``default.html`` (not a project's override), as
    ``render_default`` knows it, under Django's engine with autoescaping: ``render_default``
    writes what it would render. Decided once per template object."""
    known = getattr(template, "realtime_apps_default", None)
    if known is None:
        origin = getattr(template, "origin", None)
        compiled = getattr(template, "template", None)
        engine = getattr(compiled, "engine", None)
        known = (
            origin is not None
            and engine is not None
            and engine.autoescape
            and origin.name == DEFAULT_TEMPLATE
            and hashlib.sha256(compiled.source.encode()).hexdigest() == DEFAULT_TEMPLATE_SHA256
        )
        try:
            template.realtime_apps_default = known
        except AttributeError:  # (a backend's template object without a __dict__)
            pass
    return known


def render_default(message: Any) -> str | None:
    """What the app's ``default.html`` renders for ``message``, written in Python: a third of
    a publish's rendering time with the CPU's caches cold (a paced publisher's case), the
    engine's variable lookup, filters and node walk being most of it. None for data the
    template reads otherwise than it looks (a mapping with an ``items`` key, which
    ``data.items`` would look up; keys that are not strings, which it would localize), and
    for a message without a time."""
    when, data = message.created_at, message.data
    if not isinstance(when, datetime):
        return None
    e = conditional_escape
    if isinstance(data, dict):
        if "items" in data or not all(isinstance(k, str) for k in data):
            return None
        rows = "".join(f"\n    <dt>{e(k)}</dt><dd>{e(data_text(v))}</dd>" for k, v in data.items())
        body = f'\n  \n  <dl class="fields">{rows}\n  </dl>\n  \n'
    else:
        body = f'\n  \n  <p class="text">{e(data_text(data))}</p>\n  \n'
    when = template_localtime(when)  # as the date filter reads it; "c" is its isoformat()
    return (
        f'<article class="message message-default">{body}  <footer class="meta">'
        f'<time datetime="{when.isoformat()}">'
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}</time></footer>\n"
        "</article>\n"
    )


def render(message: Any) -> str:
    """The message's HTML, or "" when its template fails (logged: the message is still
    stored and sent, with its data and no ``html``)."""
    topic = message.topic
    try:
        template = template_for(topic.slug)
        html = render_default(message) if is_apps_default(template) else None
        if html is None:
            html = template.render({"message": message, "data": message.data, "topic": topic})
    except Exception:
        logger.exception("rendering %s#%s failed; sent without html", topic.slug, message.seq)
        return ""
    html = " ".join(html.split())  # one line: templates are indented for people
    if len(html) > MAX_HTML_CHARS:
        logger.warning(
            "%s#%s rendered to %d characters; sent without html", topic.slug, message.seq, len(html)
        )
        return ""
    return html
