"""Every Redis name the app uses, built in one place from the channel layer's settings."""

from __future__ import annotations

from django.conf import settings

from realtime.conf import realtime_settings

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_config() -> tuple[str, str]:
    """(Redis URL, key prefix): ``REALTIME['REDIS_URL']`` and ``['REDIS_PREFIX']`` where set
    (a ``redis+cluster://`` URL is a Redis Cluster, realtime/cluster.py), else those of the
    channel layer that ``REALTIME['CHANNEL_LAYER']`` names."""
    alias = realtime_settings.CHANNEL_LAYER
    config = settings.CHANNEL_LAYERS.get(alias, {}).get("CONFIG", {})
    prefix = realtime_settings.REDIS_PREFIX or str(config.get("prefix", "asgi"))
    if realtime_settings.REDIS_URL:
        return str(realtime_settings.REDIS_URL), prefix
    return layer_url(config), prefix


def layer_url(config: dict) -> str:
    """The first Redis of a channels_redis layer's CONFIG."""
    hosts = config.get("hosts") or [DEFAULT_URL]
    host = hosts[0]
    if isinstance(host, dict):
        host = host.get("address", DEFAULT_URL)
    elif isinstance(host, (tuple, list)):
        host = f"redis://{host[0]}:{host[1]}/0"
    return str(host)


def topic_channel(prefix: str, slug: str) -> str:
    """Pub/sub channel of a topic's messages (payload: ``encode_event``)."""
    return f"{prefix}:rt:topic:{slug}"


# A topic channel also carries presence changes and whispers: payloads that start with one of
# these bytes and a space (a message's payload starts with its seq, a digit).
PRESENCE_SIGNAL, WHISPER_SIGNAL = b"p", b"w"
SIGNALS = (PRESENCE_SIGNAL, WHISPER_SIGNAL)


def presence_signal() -> bytes:
    """A topic's presence changed: hubs with listeners read its roster again."""
    return PRESENCE_SIGNAL + b" "


def whisper_event(sender: str, frame: str) -> bytes:
    """A whisper's payload: ``b"w <sender connection id> <frame>"``."""
    return WHISPER_SIGNAL + f" {sender} {frame}".encode()


def roster_key(prefix: str, slug: str) -> str:
    """Hash of who is on a topic: one field per hub (JSON ``{"m": members, "c": connections}``),
    read together with ``hubs_alive_key`` (a dead hub's field is ignored)."""
    return f"{prefix}:rt:roster:{{{slug}}}"


def hubs_alive_key(prefix: str) -> str:
    """Sorted set of hubs by their last heartbeat (epoch seconds)."""
    return f"{prefix}:rt:hubs-alive"


def heads_channel(prefix: str) -> str:
    """Pub/sub channel of heads announcements (JSON ``{slug: latest seq}``)."""
    return f"{prefix}:rt:heads"


def access_channel(prefix: str) -> str:
    """Pub/sub channel of access changes (JSON ``{"users": [...], "sessions": [...],
    "topics": [...], "all": bool}``)."""
    return f"{prefix}:rt:access"


def presence_key(prefix: str, hub_id: str) -> str:
    """Hash of one hub's subscriber counts by topic (expires unless renewed)."""
    return f"{prefix}:rt:presence:{hub_id}"


def hub_stats_key(prefix: str, hub_id: str) -> str:
    """Hash of one hub's figures for the admin's status page (expires unless renewed)."""
    return f"{prefix}:rt:hubstats:{hub_id}"


def scheduler_tick_key(prefix: str) -> str:
    """When the active scheduler last finished a tick (ISO time), and who it is."""
    return f"{prefix}:rt:scheduler-tick"


def scheduler_lock_key(prefix: str) -> str:
    return f"{prefix}:rt:scheduler-lock"


def encode_event(seq: int, frame: str, committed: float | None = None) -> bytes:
    """The pub/sub payload ``b"<seq>/<commit time> <frame>"`` (``b"<seq> <frame>"`` without
    a commit time), so a hub reads seq and the commit time without parsing JSON."""
    if committed is None:
        return f"{seq} {frame}".encode()
    return f"{seq}/{committed:.6f} {frame}".encode()


def decode_event(data: bytes) -> tuple[int, float, bytes]:
    """(seq, commit time or 0.0, frame bytes) of an ``encode_event`` payload."""
    head, _, body = data.partition(b" ")
    seq_text, _, stamp = head.partition(b"/")
    return int(seq_text), float(stamp) if stamp else 0.0, body
