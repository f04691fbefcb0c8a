"""WebSocket routing: /ws/ → RealtimeConsumer, behind session authentication."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.urls import path

from realtime.conf import realtime_settings
from realtime.consumers import RealtimeConsumer
from realtime.wire import RawSendMiddleware

websocket_urlpatterns = [path("ws/", RealtimeConsumer.as_asgi())]


class IgnoreRootPathHeader:
    """daphne turns the client-controlled ``Daphne-Root-Path`` header into ``root_path``,
    with which a client can make ``/ws/`` fail and poison redirect ``Location``s. Unless
    ``REALTIME['TRUST_ROOT_PATH_HEADER']`` says a proxy sets it, the root path is
    ``FORCE_SCRIPT_NAME`` (or empty) whatever the client sent."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket") and not realtime_settings.TRUST_ROOT_PATH_HEADER:
            root = settings.FORCE_SCRIPT_NAME or ""
            if scope.get("root_path", "") != root:
                scope = {**scope, "root_path": root}
        return await self.app(scope, receive, send)


class SessionAuthMiddleware:
    """channels' session and auth middleware for visitors with a session cookie; anonymous
    visitors (most of them) skip it: nothing to load, no database thread hop per connection.

    A handshake without ``Origin`` (no browser sent it) is anonymous even with a cookie: a
    browser always sends ``Origin`` on WebSocket handshakes, and the Origin check is what keeps
    other sites from using a visitor's session.
    """

    def __init__(self, app: Any):
        self.app = app
        self.with_session = AuthMiddlewareStack(app)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookie, origin = b"", False
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookie = value
            elif name == b"origin":
                origin = True
        if cookie and origin:
            cookies = parse_cookie(cookie.decode("latin1"))
            if cookies.get(settings.SESSION_COOKIE_NAME):
                return await self.with_session(scope, receive, send)
        else:
            cookies = {}
        return await self.app({**scope, "cookies": cookies, "user": AnonymousUser()}, receive, send)


def websocket_application():
    """The ASGI app for the ``websocket`` scope type."""
    return RawSendMiddleware(SessionAuthMiddleware(URLRouter(websocket_urlpatterns)))
