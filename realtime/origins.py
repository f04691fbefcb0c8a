"""Handshake Origin rules: the site's own hosts plus configured extra origins."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from realtime.conf import realtime_settings


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


def origin_allowed(origin: str | None) -> bool:
    """Whether a handshake with this ``Origin`` header (None: absent) may proceed."""
    if origin is None:
        return not realtime_settings.REQUIRE_ORIGIN
    origin = origin.strip().lower()
    extra = {o.rstrip("/").lower() for o in realtime_settings.ALLOWED_ORIGINS}
    if origin in extra:
        return True
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not hostname:
        return False
    if ":" in hostname:  # IPv6 literal, as ALLOWED_HOSTS writes it
        hostname = f"[{hostname}]"
    return validate_host(hostname, allowed_hosts())
