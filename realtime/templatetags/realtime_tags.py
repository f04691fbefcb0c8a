"""Template filters for showing message data as text, the same way the JS client does."""

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def data_text(data: Any) -> str:
    """Strings as they are, anything else as indented JSON (escaped by the template)."""
    if isinstance(data, str):
        return data
    if data is None or isinstance(data, int | float):  # bool is an int
        return json.dumps(data)  # the same text; the C encoder (indent= takes Python's)
    return json.dumps(data, indent=2, ensure_ascii=False)


@register.filter
def is_mapping(data: Any) -> bool:
    return isinstance(data, dict)


@register.filter
def label(key: Any) -> str:
    """A data key as a label for people: ``"site_visits"`` → ``"Site visits"``."""
    text = str(key).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]
