"""WebSocket routing: /ws/ → RealtimeConsumer, behind session authentication."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import path

from realtime.consumers import RealtimeConsumer
from realtime.wire import RawSendMiddleware

websocket_urlpatterns = [path("ws/", RealtimeConsumer.as_asgi())]


def websocket_application():
    """The ASGI app for the ``websocket`` scope type."""
    return RawSendMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
