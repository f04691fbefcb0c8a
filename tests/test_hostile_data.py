"""Hostile message data: what ``json.loads`` accepts but cannot be encoded, stored or rendered
(lone surrogates, NUL) is refused at every entry point with ``bad_request``; a row stored before
(from an older version) can never stop delivery of the others; a Redis that hangs never holds
a publisher for long. Against real daphne where the bug only shows there."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from realtime import engine, outbox
from realtime.embedded import EmbeddedRedis
from realtime.exceptions import InvalidMessage
from realtime.models import Message, Topic
from tests.helpers.client import ResumingClient

SURROGATE_PUBLISH = '{"type":"publish","topic":"chat","id":1,"data":{"text":"\\ud800"}}'
NUL_PUBLISH = '{"type":"publish","topic":"chat","id":2,"data":{"text":"a\\u0000b"}}'


@pytest.mark.e2e
@pytest.mark.parametrize("plain", [False, True], ids=["realtime.server", "plain-daphne"])
async def test_socket_refuses_unsendable_data_and_delivery_goes_on(live_site, plain):
    site = live_site(scheduler=False, plain=plain)
    reader = ResumingClient(site.ws_url, ["chat"]).start()
    await asyncio.wait_for(reader.subscribed.wait(), 10)
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        for text in (SURROGATE_PUBLISH, NUL_PUBLISH):
            await ws.send(text)
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (answer["type"], answer["code"]) == ("error", "bad_request"), answer
        await ws.send(json.dumps({"type": "publish", "topic": "chat", "data": {"text": "ok"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["seq"] == 1
    await reader.wait_for("chat", 1)
    assert reader.raw["chat"] == [1]
    await reader.stop()


@pytest.mark.e2e
async def test_a_stored_unsendable_row_never_blocks_the_sweep_or_the_pages(live_site):
    """A row stored by an older version (no check then) and never fanned out: the sweep sends
    it repaired, then everything after it; the scheduler keeps ticking; pages answer 200."""
    site = live_site(realtime={"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.2})
    reader = ResumingClient(site.ws_url, ["chat", "news"]).start()
    await asyncio.wait_for(reader.subscribed.wait(), 10)
    await asyncio.to_thread(
        site.shell,
        "from realtime import fanout, publish\n"
        "from realtime.models import Message, Topic\n"
        "fanout.fan_out_after_commit = lambda m: None  # as if Redis failed: left to the sweep\n"
        "chat = Topic.objects.get(slug='chat')\n"
        "chat.last_seq = 1; chat.save()\n"
        "Message.objects.create(topic=chat, seq=1, data={'text': 'bad \\ud800 row'})\n"
        "publish('chat', {'text': 'after'}); publish('news', {'text': 'other topic'})\n",
    )
    await reader.wait_for("chat", 2)
    await reader.wait_for("news", 1)
    assert reader.raw["chat"] == [1, 2]
    bad = next(f for f in reader.frames if f.get("seq") == 1 and f.get("topic") == "chat")
    assert bad["data"] == {"text": "bad \ufffd row"}
    # The reader may have fetched the rows itself (heads announcement, gap fill) before the
    # sweep sent them: wait for the sweep.
    await asyncio.to_thread(site.scheduler.wait_for_output, "cannot be sent as stored", 15)
    assert "tick failed" not in site.scheduler.output(), site.scheduler.output()
    pending = site.shell(
        "from realtime.models import Message\n"
        "print(Message.objects.filter(fanned_out_at__isnull=True).count())"
    )
    assert pending.split()[-1] == "0"
    await reader.stop()


@pytest.mark.e2e
async def test_a_hanging_redis_never_holds_publishers(live_site, tmp_path):
    """Redis SIGSTOPped: publishing stays fast (short timeout, then the breaker skips Redis);
    once Redis answers again the outbox sweep delivers everything, in order."""
    with EmbeddedRedis(directory=tmp_path / "redis") as redis:
        site = live_site(redis=redis.url, realtime={"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.3})
        reader = ResumingClient(site.ws_url, ["chat"]).start()
        await asyncio.wait_for(reader.subscribed.wait(), 10)
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            took = await asyncio.to_thread(
                site.shell,
                "import time\nfrom realtime import publish\n"
                "start = time.monotonic()\n"
                "for i in range(30): publish('chat', {'i': i})\n"
                "print(time.monotonic() - start)",
            )
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        # Without the breaker each publish waited for the 5 s socket timeout (150 s here).
        assert float(took.split()[-1]) < 3.0, took
        await reader.wait_for("chat", 30, timeout=60)
        assert reader.received["chat"] == list(range(1, 31))
        await reader.stop()


# --- every entry point, arbitrary JSON (hypothesis) ---------------------------------------------

text_with_hostile_characters = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
    | st.sampled_from(["\ud800", "\udfff", "\x00", "\\"]),
    max_size=8,
) | st.just("\\u0000")
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text_with_hostile_characters,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(text_with_hostile_characters, inner, max_size=3)
    ),
    max_leaves=8,
)
entry_points = st.sampled_from(["socket", "publish", "command", "admin"])


@pytest.mark.django_db(transaction=True)
@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(entry_points, json_data), min_size=1, max_size=5))
def test_arbitrary_json_through_every_entry_leaves_outbox_empty_and_readers_contiguous(
    settings, channel_layer, django_user_model, batch
):
    settings.REALTIME = {"PUBLISH_RATE_PER_S": 1000, "PUBLISH_BURST": 1000, "OUTBOX_GRACE": 0}
    async_to_sync(_through_every_entry)(batch, django_user_model)


async def _through_every_entry(batch, user_model) -> None:
    from channels.testing import WebsocketCommunicator

    from realtime.routing import websocket_application

    await database_sync_to_async(Topic.objects.get_or_create)(
        slug="chat", defaults={"visitor_publish": True}
    )
    staff = await database_sync_to_async(
        lambda: user_model.objects.get_or_create(username="boss", is_staff=True, is_superuser=True)
    )()
    admin = Client()
    await database_sync_to_async(admin.force_login)(staff[0])
    app = websocket_application()
    reader = WebsocketCommunicator(app, "/ws/", subprotocols=["realtime.v1"])
    writer = WebsocketCommunicator(app, "/ws/", subprotocols=["realtime.v1"])
    try:
        for comm in (reader, writer):
            assert (await comm.connect(5))[0]
            await comm.receive_json_from(5)
        start = await database_sync_to_async(lambda: Topic.objects.get(slug="chat").last_seq)()
        await reader.send_json_to({"type": "subscribe", "topic": "chat", "since": start})
        assert (await reader.receive_json_from(5))["type"] == "subscribed"
        for entry, data in batch:
            await _publish(entry, data, writer, admin)
        await outbox.sweep()
        last = await database_sync_to_async(lambda: Topic.objects.get(slug="chat").last_seq)()
        seqs = []
        while len(seqs) < last - start:
            frame = await reader.receive_json_from(5)
            if frame["type"] == "message":
                seqs.append(frame["seq"])
        assert seqs == list(range(start + 1, last + 1))
        assert await database_sync_to_async(outbox.pending)() == []
    finally:
        for comm in (reader, writer):
            await comm.disconnect(timeout=0.3)
        await engine.stop_loop_hubs()


async def _publish(entry: str, data, writer, admin: Client) -> None:
    text = json.dumps(data)  # surrogates and NUL travel as JSON escapes, as from a browser
    if entry == "socket":
        await writer.send_to(text_data=f'{{"type":"publish","topic":"chat","data":{text}}}')
        answer = await writer.receive_json_from(5)
        assert answer["type"] in ("published", "error"), answer
        if answer["type"] == "error":
            assert answer["code"] == "bad_request", answer
    elif entry == "publish":
        try:
            await database_sync_to_async(outbox.publish)("chat", data)
        except InvalidMessage:
            pass
    elif entry == "command":
        try:
            await database_sync_to_async(call_command)("publish", "chat", text, stdout=_Null())
        except CommandError:
            pass
    else:
        topic = await database_sync_to_async(Topic.objects.get)(slug="chat")
        response = await database_sync_to_async(admin.post)(
            "/admin/realtime/message/add/", {"topic": topic.pk, "data": text}
        )
        assert response.status_code in (200, 302), response.status_code
        page = await database_sync_to_async(admin.get)(f"/admin/realtime/topic/{topic.pk}/change/")
        assert page.status_code == 200


class _Null:
    def write(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass


def test_admin_add_message_refuses_a_lone_surrogate_with_a_form_error(admin_client):
    topic = Topic.objects.create(slug="news")
    response = admin_client.post(
        "/admin/realtime/message/add/", {"topic": topic.pk, "data": '{"t": "\\ud800"}'}
    )
    assert response.status_code == 200 and "lone surrogate" in response.content.decode()
    assert not Message.objects.exists()


def test_command_refuses_nul_and_stores_nothing(db):
    Topic.objects.create(slug="news")
    with pytest.raises(CommandError, match="NUL"):
        call_command("publish", "news", '{"t": "\\u0000"}')
    assert not Message.objects.exists()


def test_publish_refuses_a_lone_surrogate(db):
    Topic.objects.create(slug="news")
    with pytest.raises(InvalidMessage, match="surrogate"):
        outbox.publish("news", ["fine", {"k": "\udc80"}])
    assert Topic.objects.get().last_seq == 0
