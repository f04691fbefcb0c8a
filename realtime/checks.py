"""System checks for the realtime app's settings (ids realtime.E001...)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from realtime.conf import DEFAULTS

_POSITIVE_INTS = (
    "MAX_FRAME_BYTES",
    "PUBLISH_BURST",
    "MAX_SUBSCRIPTIONS",
    "OUTBOX_BATCH",
    "MAX_SEND_BUFFER",
    "FRAME_BURST",
    "API_BURST",
    "WHISPER_BURST",
)
_NON_NEGATIVE_INTS = ("ABUSE_BUDGET", "DEFAULT_BACKLOG", "MAX_CONNECTIONS_PER_ADDRESS")
_POSITIVE_NUMBERS = (
    "PUBLISH_RATE_PER_S",
    "SCHEDULER_TICK",
    "DEFAULT_RETENTION",
    "HEADS_WINDOW",
    "SCHEDULER_LOCK_TTL",
    "FRAME_RATE_PER_S",
    "FANOUT_TIMEOUT",
    "HTTP_REQUEST_TIMEOUT",
    "API_RATE_PER_S",
    "SEND_STALL_TIMEOUT",
    "WHISPER_RATE_PER_S",
)
_NON_NEGATIVE_NUMBERS = (
    "OUTBOX_GRACE",
    "FANOUT_COOLDOWN",
    "PRESENCE_GRACE",
    "SHUTDOWN_DRAIN",
    "GC_FULL_INTERVAL",
)
_BOOLEANS = (
    "REQUIRE_ORIGIN",
    "CONSUMER_CHANNEL_LAYER",
    "DIRECT_WRITE",
    "GC_TUNING",
    "TRUST_ROOT_PATH_HEADER",
)


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster")


def _importable(value: Any) -> bool:
    from django.utils.module_loading import import_string

    if not isinstance(value, str) or "." not in value:
        return False
    try:
        return callable(import_string(value))
    except ImportError:
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@register(Tags.compatibility)
def check_realtime_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Validate ``settings.REALTIME``: a dict of known keys with values of the right kind."""
    value = getattr(settings, "REALTIME", {})
    if not isinstance(value, dict):
        return [
            Error(
                f"settings.REALTIME must be a dict, not {type(value).__name__}.",
                hint="Set REALTIME = {} or a dict of the keys listed in realtime/conf.py.",
                id="realtime.E001",
            )
        ]
    errors: list[Any] = []
    for key in sorted(set(value) - set(DEFAULTS)):
        errors.append(
            Error(
                f"Unknown key {key!r} in settings.REALTIME.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="realtime.E002",
            )
        )
    for key, val in value.items():
        problem = None
        if key in _POSITIVE_INTS and not (_is_int(val) and val > 0):
            problem = "a positive integer"
        elif key in _NON_NEGATIVE_INTS and not (_is_int(val) and val >= 0):
            problem = "an integer >= 0"
        elif key in _POSITIVE_NUMBERS and not (_is_number(val) and val > 0):
            problem = "a positive number"
        elif key in _NON_NEGATIVE_NUMBERS and not (_is_number(val) and val >= 0):
            problem = "a number >= 0"
        elif key == "ALLOWED_ORIGINS" and not (
            isinstance(val, (list, tuple)) and all(isinstance(o, str) and "://" in o for o in val)
        ):
            problem = "a list of origins such as 'https://example.com'"
        elif key in _BOOLEANS and not isinstance(val, bool):
            problem = "true or false"
        elif key == "WRITE_PATH" and val not in ("socket", "autobahn"):
            problem = "'socket' or 'autobahn'"
        elif key == "PRESENCE_INFO" and not (val == "" or _importable(val)):
            problem = "'' or the dotted path of a function(user) -> dict that can be imported"
        elif key == "SHUTDOWN_DRAIN" and _is_number(val) and val > 10:
            problem = "at most 10 (the supervisor kills a worker 14 s after asking it to stop)"
        elif key == "REDIS_URL" and not (
            val == ""
            or (isinstance(val, str) and val.split("://", 1)[0] in _REDIS_SCHEMES and "://" in val)
        ):
            problem = "'' or a URL redis://, rediss://, unix:// or redis+cluster://"
        elif key == "REDIS_PREFIX" and not isinstance(val, str):
            problem = "a string"
        elif key == "CHANNEL_LAYER" and val not in getattr(settings, "CHANNEL_LAYERS", {}):
            problem = "an alias defined in CHANNEL_LAYERS"
        if problem:
            errors.append(
                Error(
                    f"settings.REALTIME[{key!r}] is {val!r}; it must be {problem}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="realtime.E003",
                )
            )
    errors.extend(_check_channel_layer(value))
    errors.extend(_check_redis_url(value))
    return errors


def _check_redis_url(value: dict[str, Any]) -> list[Any]:
    """A Redis Cluster URL only where the app reads it, never in the channel layer; one that
    parses; and (when the server answers) the right kind of server behind it."""
    from realtime import cluster, keys

    errors: list[Any] = []
    for alias, layer in (getattr(settings, "CHANNEL_LAYERS", {}) or {}).items():
        hosts = (layer.get("CONFIG") or {}).get("hosts") or []
        if any(cluster.is_cluster(keys.layer_url({"hosts": [h]})) for h in hosts):
            errors.append(
                Error(
                    f"CHANNEL_LAYERS[{alias!r}] names a Redis Cluster; channels_redis has no "
                    "cluster support (its group commands span slots: MovedError).",
                    hint="Set REALTIME['REDIS_URL'] to the redis+cluster:// URL and give the "
                    "channel layer a single Redis (or the in-memory layer); see the README.",
                    id="realtime.E010",
                )
            )
    url = value.get("REDIS_URL", "")
    if not isinstance(url, str):
        return errors
    if cluster.is_cluster(url):
        try:
            cluster.seeds(url)
        except ValueError as exc:
            errors.append(
                Error(
                    f"settings.REALTIME['REDIS_URL'] is {url!r}: {exc}.",
                    hint="redis+cluster://host:port[,host:port...]/0",
                    id="realtime.E011",
                )
            )
            return errors
    if errors:
        return errors
    url, _ = keys.redis_config()
    kind = cluster.probe(url)
    if kind == "cluster" and not cluster.is_cluster(url):
        errors.append(
            Error(
                f"The Redis at {url} is a Redis Cluster node, but the URL is a single Redis's: "
                "messages of topics whose slots other masters own would fail (MOVED).",
                hint="Use redis+cluster://host:port[,host:port...]/0 in REALTIME['REDIS_URL'] "
                "(the REDIS_URL environment variable of this project's settings).",
                id="realtime.E012",
            )
        )
    elif kind == "single" and cluster.is_cluster(url):
        errors.append(
            Error(
                f"REALTIME['REDIS_URL'] is a Redis Cluster URL, but {url} is not a cluster "
                "(cluster_enabled:0).",
                hint="Use redis://host:port/db for a single Redis.",
                id="realtime.E013",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_open_origins(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Wildcards in ALLOWED_HOSTS open the WebSocket Origin check to other sites."""
    wild = [h for h in settings.ALLOWED_HOSTS if h == "*" or h.startswith(".")]
    if not wild:
        return []
    return [
        Warning(
            f"ALLOWED_HOSTS contains {', '.join(map(repr, wild))}: WebSocket handshakes from "
            "pages of any matching host are accepted, so a page on such a host can open a "
            "socket with a visitor's session (cross-site WebSocket hijacking).",
            hint="List exact host names in ALLOWED_HOSTS, and other sites' origins that may "
            "open sockets in REALTIME['ALLOWED_ORIGINS'].",
            id="realtime.W002",
        )
    ]


def _check_channel_layer(value: dict[str, Any]) -> list[Any]:
    alias = value.get("CHANNEL_LAYER", DEFAULTS["CHANNEL_LAYER"])
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if alias not in layers and not value.get("REDIS_URL"):
        return [
            Error(
                f"No channel layer {alias!r} in CHANNEL_LAYERS; topics cannot be fanned out.",
                hint="Configure channels_redis.core.RedisChannelLayer (see the README).",
                id="realtime.E004",
            )
        ]
    backend = layers[alias].get("BACKEND", "")
    own_redis = bool(value.get("REDIS_URL"))  # the fan-out does not use the layer's Redis
    if backend.endswith("InMemoryChannelLayer") and not settings.DEBUG and not own_redis:
        return [
            Warning(
                "The in-memory channel layer only reaches consumers in the same process.",
                hint="Use channels_redis.core.RedisChannelLayer in production.",
                id="realtime.W001",
            )
        ]
    return []


@register(Tags.security)
def check_metrics_access(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``METRICS_ALLOWED_IPS`` entries must be addresses or networks (realtime/ops.py)."""
    import ipaddress

    entries = getattr(settings, "METRICS_ALLOWED_IPS", [])
    if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
        entries = [entries]
    errors: list[Any] = []
    for entry in entries:
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            errors.append(
                Error(
                    f"METRICS_ALLOWED_IPS entry {entry!r} is not an IP address or network.",
                    hint="Use addresses or networks such as 127.0.0.1, ::1 or 10.0.0.0/8.",
                    id="realtime.E005",
                )
            )
    return errors
