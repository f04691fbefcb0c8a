"""The app's tunables: ``settings.REALTIME`` over ``DEFAULTS``, read lazily, reset on change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Largest client frame, in bytes (UTF-8). Larger frames close the socket with 1009.
    "MAX_FRAME_BYTES": 64 * 1024,
    # Visitor publish: token bucket per connection.
    "PUBLISH_RATE_PER_S": 10.0,
    "PUBLISH_BURST": 20,
    # Whispers (client events that are not stored, e.g. "typing"): their own token bucket per
    # connection; beyond it rate_limited, which spends the abuse budget.
    "WHISPER_RATE_PER_S": 5.0,
    "WHISPER_BURST": 10,
    # Presence: seconds a member stays after the last of their connections on a topic left
    # (a page reload shows no leave), and a dotted path to a function(user) -> dict of JSON
    # values shown with each member as "info" (e.g. an avatar URL); "" for none.
    "PRESENCE_GRACE": 10.0,
    "PRESENCE_INFO": "",
    # Frames of any type (pings too) a connection may send: token bucket per connection.
    # Beyond it frames are refused with rate_limited, which spends the abuse budget.
    "FRAME_RATE_PER_S": 50.0,
    "FRAME_BURST": 100,
    # HTTP publish API (POST /api/v1/topics/<slug>/messages): requests per token (per server
    # process), a token bucket; beyond it 429 with Retry-After.
    "API_RATE_PER_S": 10.0,
    "API_BURST": 20,
    # Bad frames and refused publishes a connection may send after being told, before 1008.
    "ABUSE_BUDGET": 20,
    # Subscriptions one connection may hold.
    "MAX_SUBSCRIPTIONS": 100,
    # Connections one client address may hold in one server process (0: no limit). Behind a
    # proxy, turn it on only when daphne runs with --proxy-headers (trusting the proxy's
    # X-Forwarded-For), or every visitor shares the proxy's address.
    "MAX_CONNECTIONS_PER_ADDRESS": 0,
    # Bytes the server may hold for a connection that does not read; beyond, it is dropped
    # (it resumes later with `since`). Under daphne only.
    "MAX_SEND_BUFFER": 1024 * 1024,
    # Seconds a connection's unsent bytes may stay without shrinking while the server waits
    # to write more (a replay paced by what the client reads); then it is dropped as a reader
    # that does not read.
    "SEND_STALL_TIMEOUT": 10.0,
    # The after-commit fan-out runs in the publisher's thread: it waits for Redis at most
    # FANOUT_TIMEOUT seconds; after a failure it leaves messages to the outbox sweep for
    # FANOUT_COOLDOWN seconds before trying Redis again (a circuit breaker).
    "FANOUT_TIMEOUT": 0.1,
    "FANOUT_COOLDOWN": 1.0,
    # Defaults for new topics.
    "DEFAULT_BACKLOG": 10,
    "DEFAULT_RETENTION": 1000,
    # Scheduler: seconds between ticks; seconds a stored message may wait for its after-commit
    # fan-out before the outbox sweep sends it; most messages one sweep sends.
    "SCHEDULER_TICK": 1.0,
    "OUTBOX_GRACE": 2.0,
    "OUTBOX_BATCH": 500,
    # Each tick the scheduler announces the latest seq of topics with messages this recent
    # (seconds), so a connection whose last message was lost fetches it.
    "HEADS_WINDOW": 300.0,
    # Only one scheduler is active: it holds a lock in Redis with this expiry (seconds),
    # renewed every tick; a standby takes over when it expires.
    "SCHEDULER_LOCK_TTL": 5.0,
    # Extra origins (scheme://host[:port]) allowed to open sockets beside ALLOWED_HOSTS.
    "ALLOWED_ORIGINS": [],
    # Refuse handshakes without an Origin header (non-browser clients). When False, such a
    # handshake is accepted but treated as anonymous even if it carries a session cookie.
    "REQUIRE_ORIGIN": False,
    # daphne turns a client's Daphne-Root-Path header into the ASGI root_path. Only a proxy
    # that sets (and strips) it may be trusted; by default the header is ignored.
    "TRUST_ROOT_PATH_HEADER": False,
    # Seconds a client may take to send its HTTP request (headers) before the server closes
    # the connection (slow clients holding sockets open).
    "HTTP_REQUEST_TIMEOUT": 20.0,
    # The channel layer whose Redis (hosts[0]) and prefix the fan-out engine uses, unless
    # REDIS_URL / REDIS_PREFIX are set. REDIS_URL "redis+cluster://host:port[,host:port]/0"
    # is a Redis Cluster (sharded pub/sub; realtime/cluster.py).
    "CHANNEL_LAYER": "default",
    "REDIS_URL": "",
    "REDIS_PREFIX": "",
    # Give each consumer a channel-layer channel (for group_send from other code). Topics do
    # not need it. Off by default: it costs a receive task per connection, and channels ends
    # the connection (1011) when that receive fails, i.e. whenever Redis goes away.
    "CONSUMER_CHANNEL_LAYER": False,
    # Seconds over which a stopping server closes its connections (with 1001), in 20 batches:
    # its clients come back on the other hosts or workers a batch at a time, so a rolling
    # restart never has every client away at once. 0: all at once. Keep it well under the
    # supervisor's 14 s stop timeout.
    "SHUTDOWN_DRAIN": 2.0,
    # Under daphne, write fanned-out frames straight to the sockets (realtime/wire.py).
    "DIRECT_WRITE": True,
    # How: "socket" (one send() of the pre-built bytes when Twisted holds nothing for the
    # connection) or "autobahn" (its public prepareMessage/sendPreparedMessage; slower, see
    # bench/RESULTS.md, but no Twisted internals).
    "WRITE_PATH": "socket",
    # Garbage collector settings for many long-lived connections (realtime/server.py,
    # tune_gc): start-up objects frozen out of collections, full collections paced.
    # False: nothing frozen or paced.
    "GC_TUNING": True,
    # With GC_TUNING: at most one full collection every this many seconds, and only once a
    # connection closed since the last one or a minute passed (each still when Python's own
    # rule calls for it). 0: Python's pace.
    "GC_FULL_INTERVAL": 3.0,
}


class RealtimeSettings:
    """Attribute access to ``settings.REALTIME`` with defaults; unknown keys fail a check."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "REALTIME", {}) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"settings.REALTIME must be a dict, not {value!r}.")
        return value

    def __getattr__(self, name: str) -> Any:
        """A setting's value, kept as an attribute of this object until ``REALTIME`` changes:
        read again per connection and per frame, it then costs what an attribute does."""
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown REALTIME setting {name!r}.")
        cache = self._cache
        if cache is None:
            cache = self._cache = {**DEFAULTS, **self.user_settings}
        value = cache[name]
        if self._cache is cache:  # (not if REALTIME changed meanwhile, in another thread)
            self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self._cache = None  # first: a read from now on builds from the new REALTIME
        for name in [key for key in self.__dict__ if key != "_cache"]:
            self.__dict__.pop(name, None)


realtime_settings = RealtimeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "REALTIME":
        realtime_settings.reload()


setting_changed.connect(_reload)


def refuse_insecure_secret_key() -> None:
    """Refuse to serve with DEBUG off and the development secret key."""
    dev_key = getattr(settings, "DEV_SECRET_KEY", None)
    if not settings.DEBUG and dev_key and settings.SECRET_KEY == dev_key:
        raise ImproperlyConfigured(
            "SECRET_KEY is the development default while DEBUG is off. "
            "Set the SECRET_KEY environment variable to a long random value "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=1 locally."
        )
