"""Baseline: the Channels tutorial design. Each consumer joins a group on connect, and every
``group_send`` makes the channel layer queue an event per consumer, whose handler sends it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class TutorialConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add("bench", self.channel_name)
        await self.accept(subprotocol="realtime.v1")

    async def disconnect(self, code):
        await self.channel_layer.group_discard("bench", self.channel_name)

    async def bench_message(self, event):
        await self.send(text_data=event["frame"])


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/", TutorialConsumer.as_asgi())])}
)
