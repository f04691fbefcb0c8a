"""Handshake rules: subprotocol and Origin.

An ``Origin`` is allowed when it is one of ``REALTIME['ALLOWED_ORIGINS']`` exactly (scheme,
host and port), or when it is the site itself: a host of ``ALLOWED_HOSTS``, on the port the
client connected to (the ``Host`` header's), with scheme ``https`` when the site runs behind
TLS (``HTTPS=1``), ``http`` or ``https`` otherwise. This blocks cross-site WebSocket hijacking.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

from realtime import protocol
from realtime.conf import realtime_settings

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def split_origin(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port or None for the scheme's default) of an origin, or None."""
    try:
        parts = urlsplit(origin.strip().lower().rstrip("/"))
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or parts.path or parts.query:
        return None
    if ":" in host:  # IPv6 literal, as ALLOWED_HOSTS writes it
        host = f"[{host}]"
    if port == DEFAULT_PORTS[parts.scheme]:
        port = None
    return parts.scheme, host, port


def _request_port(host_header: str | None) -> int | None:
    """The explicit, non-default port of the Host header (None: a default port)."""
    if not host_header:
        return None
    _, port = split_domain_port(host_header.strip().lower())
    if not port or not port.isdigit() or int(port) in (80, 443):
        return None
    return int(port)


@lru_cache(maxsize=1024)
def origin_allowed(origin: str | None, host_header: str | None = None) -> bool:
    """Whether a handshake with this ``Origin`` header (None: absent) may proceed.

    Remembered for the last 1,024 pairs of headers (a site's visitors send a handful: parsing
    and checking them was 5 % of a handshake); forgotten when a setting changes."""
    if origin is None:
        return not realtime_settings.REQUIRE_ORIGIN
    found = split_origin(origin)
    if found is None:
        return False
    extra = {split_origin(o) for o in realtime_settings.ALLOWED_ORIGINS}
    if found in extra:
        return True
    scheme, host, port = found
    if getattr(settings, "HTTPS", False) and scheme != "https":
        return False
    return port == _request_port(host_header) and validate_host(host, allowed_hosts())


def _forget_origins(**kwargs: Any) -> None:
    origin_allowed.cache_clear()


setting_changed.connect(_forget_origins)


class Refusal(str):
    """Why a handshake is refused: a phrase for the log, with ``reason`` (a metrics label:
    ``subprotocol``, ``origin``, ``no_origin``, ``address_limit``)."""

    reason: str

    def __new__(cls, reason: str, phrase: str) -> Refusal:
        found = super().__new__(cls, phrase)
        found.reason = reason
        return found


def handshake_refusal(scope: dict[str, Any]) -> Refusal | None:
    """Why a handshake must be refused, or None to accept it."""
    offered = scope.get("subprotocols") or []
    if offered and protocol.PROTOCOL not in offered:
        return Refusal("subprotocol", f"subprotocols {offered!r} lack {protocol.PROTOCOL}")
    origin = header(scope, b"origin")
    if not origin_allowed(origin, request_host(scope)):
        if origin:
            return Refusal("origin", f"origin {origin!r} not allowed")
        return Refusal("no_origin", "no Origin header")
    return None


def request_host(scope: dict[str, Any]) -> str | None:
    """The host the client asked for: the Host header, or X-Forwarded-Host behind a proxy
    that sets it when ``USE_X_FORWARDED_HOST`` is on (as Django's ``get_host``)."""
    if getattr(settings, "USE_X_FORWARDED_HOST", False):
        forwarded = header(scope, b"x-forwarded-host")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return header(scope, b"host")
