"""WebSocket routing: /ws/ → RealtimeConsumer; session authentication for visitors with a
session cookie."""

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
from realtime.wire import SCOPE_KEY, RawSendMiddleware

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


class WebSocketEntry:
    """/ws/ in one step, for the anonymous visitors most connections are: the server's own
    ``send`` kept in the scope (``wire.RawSendMiddleware``), no session to load, the route;
    one scope copy and one suspended frame for the connection's life, where the stack of
    middleware below keeps four frames and three copies (bench/connection_profile.py).

    Visitors with a session cookie go through that stack: channels' session and auth
    middleware, then ``URLRouter``; so do paths other than /ws/ (no route: an error, as
    channels answers). A handshake without ``Origin`` (no browser sent it) is anonymous even
    with a cookie: a browser always sends ``Origin`` on WebSocket handshakes, and the Origin
    check is what keeps other sites from using a visitor's session.
    """

    def __init__(self) -> None:
        self.stack = RawSendMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookie, origin = b"", False
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookie = value
            elif name == b"origin":
                origin = True
        cookies: dict[str, str] = {}
        if cookie and origin:
            cookies = parse_cookie(cookie.decode("latin1"))
            if cookies.get(settings.SESSION_COOKIE_NAME):
                return await self.stack(scope, receive, send)
        root = scope.get("root_path", "")
        path = scope.get("path", "")
        if not path.startswith(root) or path[len(root) :].lstrip("/") != "ws/":
            return await self.stack(scope, receive, send)
        scope = {
            **scope,
            SCOPE_KEY: send,
            "cookies": cookies,
            "user": AnonymousUser(),
            "path_remaining": "",
            "url_route": NO_ARGUMENTS,
        }
        return await RealtimeConsumer()(scope, receive, send)


NO_ARGUMENTS = {"args": (), "kwargs": {}}  # /ws/ takes none (shared, never changed)


def websocket_application() -> WebSocketEntry:
    """The ASGI app for the ``websocket`` scope type."""
    return WebSocketEntry()
