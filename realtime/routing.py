"""WebSocket routing: /ws/ → RealtimeConsumer, behind session authentication."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.urls import path

from realtime.consumers import RealtimeConsumer
from realtime.wire import RawSendMiddleware

websocket_urlpatterns = [path("ws/", RealtimeConsumer.as_asgi())]


class SessionAuthMiddleware:
    """channels' session and auth middleware for visitors with a session cookie; anonymous
    visitors (most of them) skip it: nothing to load, no database thread hop per connection.
    """

    def __init__(self, app: Any):
        self.app = app
        self.with_session = AuthMiddlewareStack(app)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookie = b""
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookie = value
                break
        if cookie:
            cookies = parse_cookie(cookie.decode("latin1"))
            if cookies.get(settings.SESSION_COOKIE_NAME):
                return await self.with_session(scope, receive, send)
        else:
            cookies = {}
        return await self.app({**scope, "cookies": cookies, "user": AnonymousUser()}, receive, send)


def websocket_application():
    """The ASGI app for the ``websocket`` scope type."""
    return RawSendMiddleware(SessionAuthMiddleware(URLRouter(websocket_urlpatterns)))
