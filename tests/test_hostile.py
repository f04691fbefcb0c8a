"""Hostile input: arbitrary frames at the parser and at a live consumer (hypothesis)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from realtime import protocol
from realtime.models import Topic
from realtime.outbox import publish
from realtime.protocol import ProtocolError, parse

CODES = {
    "bad_json",
    "bad_request",
    "unknown_type",
    "not_found",
    "forbidden",
    "rate_limited",
    "too_many_subscriptions",
    "binary_unsupported",
    "server_error",
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
frame_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["subscribe", "unsubscribe", "publish", "ping", "pong", ""])
        | st.text(max_size=10)
        | json_values,
        "topic": st.sampled_from(["news", "chat", "nope", "Bad Slug", ""]) | json_values,
        "since": st.integers(min_value=-5, max_value=2**64) | json_values,
        "data": json_values,
        "id": json_values,
    },
)
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
    json_values.map(json.dumps),
    frame_objects.map(json.dumps),
)


@given(frames)
@hsettings(max_examples=500)
def test_parser_accepts_or_refuses_with_a_documented_code(text):
    try:
        frame = parse(text)
    except ProtocolError as exc:
        assert exc.code in CODES
        assert json.loads(exc.frame())["type"] == "error"
        return
    assert frame.type in protocol.CLIENT_TYPES
    if frame.topic is not None:
        assert protocol.is_valid_slug(frame.topic)


@pytest.mark.django_db(transaction=True)
@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(frames, min_size=1, max_size=6))
def test_consumer_survives_arbitrary_frames_and_keeps_serving(settings, channel_layer, batch):
    settings.REALTIME = {"ABUSE_BUDGET": 1000, "PUBLISH_RATE_PER_S": 1000, "PUBLISH_BURST": 1000}
    async_to_sync(_exchange)(batch)


async def _exchange(batch: list[str]) -> None:
    from channels.testing import WebsocketCommunicator

    from realtime import engine
    from realtime.routing import websocket_application

    await database_sync_to_async(Topic.objects.get_or_create)(slug="news")
    await database_sync_to_async(Topic.objects.get_or_create)(
        slug="chat", defaults={"visitor_publish": True}
    )
    comm = WebsocketCommunicator(websocket_application(), "/ws/", subprotocols=["realtime.v1"])
    try:
        assert (await comm.connect(5))[0]
        await comm.receive_json_from(5)  # welcome
        await comm.send_json_to({"type": "subscribe", "topic": "news", "since": 10**9})
        assert (await comm.receive_json_from(5))["type"] == "subscribed"
        for text in batch:
            await comm.send_input({"type": "websocket.receive", "text": text})
            await comm.send_json_to({"type": "ping", "id": "barrier"})
            while True:  # everything up to the barrier's pong
                answer = await comm.receive_json_from(5)
                if answer == {"type": "pong", "id": "barrier"}:
                    break
                if answer["type"] == "error":
                    assert answer["code"] in CODES and answer["code"] != "server_error"
                else:
                    assert answer["type"] in {
                        "subscribed",
                        "unsubscribed",
                        "published",
                        "pong",
                        "message",
                    }
        # Its other subscription still works.
        await comm.send_json_to({"type": "subscribe", "topic": "news"})
        stored = await database_sync_to_async(publish)("news", {"after": "fuzz"})
        async with asyncio.timeout(5):
            while True:
                frame = await comm.receive_json_from(5)
                if frame["type"] == "message" and frame["seq"] == stored.seq:
                    break
    finally:
        await comm.disconnect(timeout=0.3)
        await engine.stop_loop_hubs()
