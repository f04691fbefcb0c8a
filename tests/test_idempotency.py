"""Publishing exactly once with an idempotency key (``publish`` frame ``key``): the same key
from the same user (or anonymous session) within 24 h answers with the first seq and stores
nothing new; other users' keys are their own; bad keys are ``bad_request``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from websockets.asyncio.client import connect

from realtime import idempotency, outbox
from realtime.models import IdempotentPublish, Message
from tests.helpers.browserless import Browserless

MAKE_USERS = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('ann', password='ann-pass-123')\n"
    "User.objects.create_user('bob', password='bob-pass-123')\n"
)
COUNT = (
    "from realtime.models import Message\nprint(Message.objects.filter(topic__slug='chat').count())"
)


async def ask(ws, frame: dict) -> dict:
    await ws.send(json.dumps(frame))
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer.get("id") == frame.get("id"):
            return answer


def count(site) -> int:
    return int(site.shell(COUNT).split()[-1])


async def test_the_same_key_is_stored_once_and_answered_with_the_first_seq(live_site):
    site = live_site(scheduler=False)
    before = await asyncio.to_thread(count, site)
    origin = f"http://127.0.0.1:{site.port}"
    publish = {"type": "publish", "topic": "chat", "data": {"text": "once"}, "key": "k-1"}
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        first = await ask(ws, {**publish, "id": 1})
        again = await ask(ws, {**publish, "id": 2})
        assert first["type"] == again["type"] == "published"
        assert again["seq"] == first["seq"]
        other = await ask(ws, {**publish, "key": "k-2", "id": 3})
        assert other["seq"] == first["seq"] + 1
        without = await ask(ws, {**publish, "id": 4, "key": None})  # null: no key
        assert without["seq"] == first["seq"] + 2
    # A retry from a new socket (the JS client after a reconnect) is the same publish.
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        retried = await ask(ws, {**publish, "id": 5})
        assert retried["seq"] == first["seq"]
    assert await asyncio.to_thread(count, site) == before + 3


@pytest.mark.parametrize("key", ["", "x" * 101, 5, ["k"], {"k": 1}, True])
async def test_bad_keys_are_bad_requests(live_site, key):
    site = live_site(scheduler=False)
    origin = f"http://127.0.0.1:{site.port}"
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        frame = {"type": "publish", "topic": "chat", "data": 1, "key": key, "id": 9}
        answer = await ask(ws, frame)
    assert (answer["type"], answer["code"]) == ("error", "bad_request")
    assert "'key'" in answer["message"]


async def test_users_have_their_own_keys(live_site):
    site = live_site(scheduler=False)
    await asyncio.to_thread(site.shell, MAKE_USERS)
    seqs = []
    for name in ("ann", "bob"):
        browser = Browserless(site.url)
        await asyncio.to_thread(browser.login, name, f"{name}-pass-123")
        async with browser.socket(site.ws_url) as ws:
            await ws.recv()
            frame = {"type": "publish", "topic": "chat", "data": name, "key": "same", "id": 1}
            seqs.append((await ask(ws, frame))["seq"])
            seqs.append((await ask(ws, {**frame, "id": 2}))["seq"])
    assert seqs[0] == seqs[1] and seqs[2] == seqs[3] and seqs[2] == seqs[0] + 1


@pytest.mark.django_db(transaction=True)
def test_publish_once_window_and_prune(topic_factory):
    topic = topic_factory(slug="chat")

    def publish_once(scope, key, topic, data, source):
        message = outbox.publish(topic, data, source=source, key=key, scope=scope)
        return message.topic.slug, message.seq, not message.repeated

    assert publish_once("user:1", "k", topic, 1, source="api") == ("chat", 1, True)
    assert publish_once("user:1", "k", topic, 2, source="api") == ("chat", 1, False)
    assert publish_once("user:2", "k", topic, 3, source="api") == ("chat", 2, True)
    # A day later the key is free again, and the scheduler's prune forgets old keys.
    IdempotentPublish.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert publish_once("user:1", "k", topic, 4, source="api") == ("chat", 3, True)
    assert idempotency.prune() == 1
    assert Message.objects.filter(topic=topic).count() == 3
    assert idempotency.scope_of(None, None) == "anonymous"
    assert idempotency.scope_of(None, "abc") == "session:abc"
