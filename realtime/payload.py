"""What message data may be: JSON that every part of the system can encode, store and send.

``json.loads`` accepts strings that cannot be encoded as UTF-8 (lone surrogates such as
``"\\ud800"``) and ``"\\u0000"``, which PostgreSQL's jsonb refuses. Stored, such data would
break every frame, page and sweep that touches it, so every entry point refuses it here
(``check``); and for rows stored before, ``sendable`` replaces the offending characters with
U+FFFD so that one row can never stop delivery of the others.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A JSON escape of NUL preceded by an even number of backslashes (an odd number would make
# it the text "\u0000" rather than the character).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_UNSENDABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def dumps(data: Any) -> str:
    """Canonical compact JSON text (non-ASCII kept as is)."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def problem(data: Any) -> str | None:
    """Why ``data`` cannot be a message (a sentence), or None when it can."""
    try:
        text = dumps(data)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"Message data must be JSON (no NaN or Infinity): {exc}"
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return "Message data must not contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        return (
            f"Message data must be valid Unicode text; {bad!r} is a lone surrogate, "
            "which cannot be encoded as UTF-8."
        )
    return None


def check(data: Any) -> None:
    """Raise ``ValueError`` saying what is wrong when ``data`` cannot be a message."""
    reason = problem(data)
    if reason is not None:
        raise ValueError(reason)


def sanitize(data: Any) -> Any:
    """``data`` with NUL and lone surrogates replaced by U+FFFD, in keys and values, and
    NaN or infinite numbers replaced by null."""
    if isinstance(data, str):
        return _UNSENDABLE.sub(REPLACEMENT, data)
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {sanitize(k) if isinstance(k, str) else k: sanitize(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [sanitize(v) for v in data]
    return data


def sendable(data: Any) -> tuple[Any, bool]:
    """(``data`` or a sanitised copy, whether it had to be sanitised)."""
    try:
        dumps(data).encode("utf-8")
        return data, False
    except (UnicodeEncodeError, ValueError):
        return sanitize(data), True
