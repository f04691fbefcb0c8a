"""The realtime.v1 wire vocabulary: parse client frames, build server frames.

Pure Python, no Django: the consumer delegates every decision about frame shape here, and the
JS client mirrors these names once (static/realtime/protocol.js).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PROTOCOL = "realtime.v1"

# Topic slugs, also used to build channel-layer group names, so they must stay within what
# channels accepts for a group name (ASCII letters, digits, '-', '_', '.' and < 100 chars).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,79}\Z"
_SLUG_RE = re.compile(SLUG_PATTERN)
# Topics of a family (third edition): ``family:key``, the family a slug, the key 1-100 of
# A-Z a-z 0-9 _ . - (also within what Redis channel names and logs take safely).
MAX_FAMILY_KEY = 100
TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,79}(:[A-Za-z0-9_.-]{1,100})?\Z"
_TOPIC_RE = re.compile(TOPIC_PATTERN)
MAX_SEQ = 2**63 - 1
MAX_WHISPER_BYTES = 4096

# Frame types.
SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING = "subscribe", "unsubscribe", "publish", "ping"
WHISPER = "whisper"  # both ways
WELCOME, SUBSCRIBED, MESSAGE, UNSUBSCRIBED = "welcome", "subscribed", "message", "unsubscribed"
PUBLISHED, PONG, ERROR = "published", "pong", "error"
PRESENCE, PRESENCE_DIFF = "presence", "presence_diff"
CLIENT_TYPES = (SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, WHISPER)

# Error codes.
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_TYPE = "unknown_type"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
BINARY_UNSUPPORTED = "binary_unsupported"
SERVER_ERROR = "server_error"

# Close codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_UNAUTHORIZED = 4401  # the user's session ended (logout, password change, deactivation)

_MISSING = object()
NO_ID = _MISSING  # a frame without an id


class ProtocolError(Exception):
    """A client frame that cannot be served; becomes an ``error`` frame."""

    def __init__(self, code: str, message: str, *, id: Any = _MISSING, topic: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.topic = topic

    def frame(self) -> str:
        return error(self.code, self.message, id=self.id, topic=self.topic)


def server_error(text: str | None) -> ProtocolError:
    """What a client is told when serving its frame failed on the server."""
    message = "The server could not serve this frame; try again later."
    return ProtocolError(SERVER_ERROR, message, id=frame_id(text or ""))


MAX_KEY_CHARS = 100  # an idempotency key of a publish


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A well-formed client frame. ``id`` is ``_MISSING`` when the client sent none."""

    type: str
    id: Any = _MISSING
    topic: str | None = None
    since: int | None = None
    data: Any = None
    key: str | None = None  # publish: an idempotency key
    presence: bool = False  # subscribe: also who is here

    @property
    def has_id(self) -> bool:
        return self.id is not _MISSING


def is_valid_slug(value: Any) -> bool:
    return isinstance(value, str) and _SLUG_RE.match(value) is not None


def is_valid_topic(value: Any) -> bool:
    """A slug or a ``family:key`` topic name."""
    return isinstance(value, str) and _TOPIC_RE.match(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(text: str) -> ClientFrame:
    """Parse one text frame, or raise ``ProtocolError`` with the documented code."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "The frame is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_JSON, "A frame must be a JSON object.")
    frame_id = obj.get("id", _MISSING)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_REQUEST, "A frame needs a string 'type'.", id=frame_id)
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            UNKNOWN_TYPE,
            f"Unknown frame type {kind[:64]!r}; expected one of {', '.join(CLIENT_TYPES)}.",
            id=frame_id,
        )
    if kind == PING:
        return ClientFrame(PING, id=frame_id)
    topic = obj.get("topic")
    if not isinstance(topic, str):
        raise ProtocolError(BAD_REQUEST, f"A {kind} frame needs a string 'topic'.", id=frame_id)
    if not is_valid_topic(topic):
        raise ProtocolError(
            BAD_REQUEST,
            f"{topic[:200]!r} is not a topic name: a slug (1-80 of a-z, 0-9, '-', '_') or "
            "family:key (the key 1-100 of A-Z a-z 0-9 _ . -).",
            id=frame_id,
        )
    if kind == SUBSCRIBE:
        since = obj.get("since")
        if since is not None and not (_is_int(since) and 0 <= since <= MAX_SEQ):
            raise ProtocolError(
                BAD_REQUEST, "'since' must be an integer >= 0.", id=frame_id, topic=topic
            )
        presence = obj.get("presence", False)
        if not isinstance(presence, bool):
            raise ProtocolError(
                BAD_REQUEST, "'presence' must be true or false.", id=frame_id, topic=topic
            )
        return ClientFrame(SUBSCRIBE, id=frame_id, topic=topic, since=since, presence=presence)
    if kind == UNSUBSCRIBE:
        return ClientFrame(UNSUBSCRIBE, id=frame_id, topic=topic)
    if kind == WHISPER:
        if "data" not in obj:
            raise ProtocolError(
                BAD_REQUEST, "A whisper frame needs 'data'.", id=frame_id, topic=topic
            )
        size = len(encode(obj["data"]).encode("utf-8", "surrogatepass"))
        if size > MAX_WHISPER_BYTES:
            raise ProtocolError(
                BAD_REQUEST,
                f"A whisper's data is {size} bytes encoded; at most {MAX_WHISPER_BYTES}.",
                id=frame_id,
                topic=topic,
            )
        return ClientFrame(WHISPER, id=frame_id, topic=topic, data=obj["data"])
    if "data" not in obj:
        raise ProtocolError(BAD_REQUEST, "A publish frame needs 'data'.", id=frame_id, topic=topic)
    key = obj.get("key")
    if key is not None and not (isinstance(key, str) and 1 <= len(key) <= MAX_KEY_CHARS):
        raise ProtocolError(
            BAD_REQUEST,
            f"'key' must be a string of 1-{MAX_KEY_CHARS} characters.",
            id=frame_id,
            topic=topic,
        )
    return ClientFrame(PUBLISH, id=frame_id, topic=topic, data=obj["data"], key=key)


def frame_id(text: str) -> Any:
    """The ``id`` of a raw frame when it has one (for errors raised after parsing)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING
    return obj.get("id", _MISSING) if isinstance(obj, dict) else _MISSING


def encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _with_id(obj: dict[str, Any], id: Any) -> dict[str, Any]:
    if id is not _MISSING:
        obj["id"] = id
    return obj


def timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a 'Z', millisecond precision."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def welcome(
    connection: str, user: str | None, limits: dict[str, Any], user_topic: str | None = None
) -> str:
    return encode(
        {
            "type": WELCOME,
            "protocol": PROTOCOL,
            "connection": connection,
            "user": user,
            "user_topic": user_topic,
            "limits": limits,
        }
    )


def subscribed(topic: str, seq: int, recovered: bool, *, id: Any = _MISSING) -> str:
    return encode(
        _with_id({"type": SUBSCRIBED, "topic": topic, "seq": seq, "recovered": recovered}, id)
    )


def message(topic: str, seq: int, ts: datetime, data: Any, html: str | None = None) -> str:
    """A ``message`` frame; ``html`` (the topic template's rendering) when there is one."""
    obj = {"type": MESSAGE, "topic": topic, "seq": seq, "ts": timestamp(ts), "data": data}
    if html:
        obj["html"] = html
    return encode(obj)


def unsubscribed(topic: str, *, id: Any = _MISSING, code: str | None = None) -> str:
    """The answer to ``unsubscribe``; with ``code`` (``forbidden``, ``not_found``) the server
    ended the subscription because the user may no longer read the topic."""
    obj: dict[str, Any] = {"type": UNSUBSCRIBED, "topic": topic}
    if code is not None:
        obj["code"] = code
    return encode(_with_id(obj, id))


def published(topic: str, seq: int, *, id: Any = _MISSING) -> str:
    return encode(_with_id({"type": PUBLISHED, "topic": topic, "seq": seq}, id))


def pong(*, id: Any = _MISSING) -> str:
    return encode(_with_id({"type": PONG}, id))


def error(code: str, message: str, *, id: Any = _MISSING, topic: str | None = None) -> str:
    obj: dict[str, Any] = {"type": ERROR, "code": code, "message": message}
    if topic is not None:
        obj["topic"] = topic
    return encode(_with_id(obj, id))


def presence(topic: str, members: list[dict[str, Any]], count: int) -> str:
    """Who is here now: ``members`` (signed-in users, each once, at most 100) and ``count``
    (every connection)."""
    return encode({"type": PRESENCE, "topic": topic, "members": members, "count": count})


def presence_diff(
    topic: str, joins: list[dict[str, Any]], leaves: list[dict[str, Any]], count: int
) -> str:
    return encode(
        {"type": PRESENCE_DIFF, "topic": topic, "joins": joins, "leaves": leaves, "count": count}
    )


def whisper(topic: str, sender: dict[str, Any], data: Any) -> str:
    """A whisper as its other subscribers get it: ``from`` is ``{"user", "name"}``."""
    return encode({"type": WHISPER, "topic": topic, "from": sender, "data": data})
