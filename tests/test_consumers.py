"""The /ws/ consumer against PROTOCOL.md, over the real Redis channel layer."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, User

from realtime import fanout
from realtime.models import Message, Topic
from realtime.outbox import publish

pytestmark = pytest.mark.django_db(transaction=True)

apublish = database_sync_to_async(publish)


@database_sync_to_async
def make_topic(slug="news", **kw) -> Topic:
    return Topic.objects.create(slug=slug, title=slug.title(), **kw)


@database_sync_to_async
def make_user(name="ann", *, staff=False, groups=()) -> User:
    user = User.objects.create_user(name, password="pw-123456", is_staff=staff)
    for g in groups:
        user.groups.add(Group.objects.get_or_create(name=g)[0])
    return user


@database_sync_to_async
def fill(slug: str, n: int) -> None:
    for i in range(n):
        publish(slug, {"n": i + 1})


# --- handshake -------------------------------------------------------------------------------


async def test_connect_welcome_lists_protocol_user_and_limits(connect, settings):
    settings.REALTIME = {
        "MAX_SUBSCRIPTIONS": 7,
        "PUBLISH_RATE_PER_S": 3,
        "MAX_FRAME_BYTES": 999,
        "WHISPER_RATE_PER_S": 2,
    }
    ok, subprotocol, ws = await connect()
    assert ok and subprotocol == "realtime.v1"
    assert ws.welcome["type"] == "welcome"
    assert ws.welcome["protocol"] == "realtime.v1"
    assert ws.welcome["user"] is None
    assert isinstance(ws.welcome["connection"], str) and ws.welcome["connection"]
    assert ws.welcome["limits"] == {
        "max_frame_bytes": 999,
        "max_subscriptions": 7,
        "publish_rate_per_s": 3,
        "whisper_rate_per_s": 2,
    }
    assert ws.welcome["user_topic"] is None


async def test_connect_welcome_names_signed_in_user(connect):
    user = await make_user("bob")
    ok, _, ws = await connect(user=user)
    assert ok and ws.welcome["user"] == "bob"
    assert ws.welcome["user_topic"] == f"user:{user.pk}"


async def test_connect_without_subprotocol_is_accepted_without_one(connect):
    ok, subprotocol, ws = await connect(subprotocols=[])
    assert ok and subprotocol is None
    assert ws.welcome["type"] == "welcome"


async def test_connect_refused_when_offered_subprotocols_lack_ours(connect):
    ok, _, _ = await connect(subprotocols=["chat", "realtime.v2"])
    assert not ok


async def test_connect_refused_for_foreign_origin(connect):
    ok, _, _ = await connect(origin=b"https://evil.example")
    assert not ok


async def test_connect_refused_for_null_origin(connect):
    ok, _, _ = await connect(origin=b"null")
    assert not ok


async def test_connect_accepted_without_origin(connect):
    ok, _, _ = await connect(origin=None)
    assert ok


async def test_connect_refused_without_origin_when_required(connect, settings):
    settings.REALTIME = {"REQUIRE_ORIGIN": True}
    ok, _, _ = await connect(origin=None)
    assert not ok


async def test_connect_accepts_extra_allowed_origin(connect, settings):
    settings.REALTIME = {"ALLOWED_ORIGINS": ["https://app.example.com"]}
    ok, _, _ = await connect(origin=b"https://app.example.com")
    assert ok
    ok, _, _ = await connect(origin=b"https://other.example.com")
    assert not ok


# --- ping and bad frames ----------------------------------------------------------------------


async def test_ping_answers_pong_echoing_id(connect):
    _, _, ws = await connect()
    assert await ws.request({"type": "ping", "id": {"any": ["json"]}}) == {
        "type": "pong",
        "id": {"any": ["json"]},
    }
    assert await ws.request({"type": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"text"', "bad_json"),
        ('{"id": 1}', "bad_request"),
        ('{"type": 5, "id": 1}', "bad_request"),
        ('{"type": "dance", "id": 1}', "unknown_type"),
        ('{"type": "realtime.message", "id": 1}', "unknown_type"),
        ('{"type": "subscribe", "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": 7, "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": "Bad Slug!", "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": "news", "since": -1, "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": "news", "since": "3", "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": "news", "since": true, "id": 1}', "bad_request"),
        ('{"type": "subscribe", "topic": "news", "since": 1.5, "id": 1}', "bad_request"),
        ('{"type": "unsubscribe", "id": 1}', "bad_request"),
        ('{"type": "publish", "topic": "news", "id": 1}', "bad_request"),
    ],
)
async def test_bad_frame_gets_documented_error_and_connection_keeps_working(connect, frame, code):
    await make_topic()
    _, _, ws = await connect()
    answer = await ws.request(frame)
    assert answer["type"] == "error"
    assert answer["code"] == code
    assert isinstance(answer["message"], str) and answer["message"]
    if '"id": 1' in frame and code != "bad_json":
        assert answer["id"] == 1
    assert (await ws.subscribe("news"))["topic"] == "news"
    assert await ws.request({"type": "ping", "id": 2}) == {"type": "pong", "id": 2}


async def test_binary_frame_is_unsupported(connect):
    _, _, ws = await connect()
    await ws.c.send_to(bytes_data=b"\x00\x01")
    answer = await ws.recv()
    assert answer["type"] == "error" and answer["code"] == "binary_unsupported"
    assert (await ws.request({"type": "ping"}))["type"] == "pong"


async def test_frame_over_limit_closes_1009(connect, settings):
    settings.REALTIME = {"MAX_FRAME_BYTES": 100}
    _, _, ws = await connect()
    await ws.send({"type": "ping", "id": "x" * 100})
    assert await ws.closed() == 1009


async def test_multibyte_frame_over_limit_in_bytes_closes_1009(connect, settings):
    settings.REALTIME = {"MAX_FRAME_BYTES": 100}
    _, _, ws = await connect()
    await ws.send('{"type":"ping","id":"' + "é" * 45 + '"}')  # < 100 chars, > 100 bytes
    assert await ws.closed() == 1009


async def test_frame_at_limit_is_served(connect, settings):
    settings.REALTIME = {"MAX_FRAME_BYTES": 100}
    _, _, ws = await connect()
    frame = '{"type":"ping","id":"' + "x" * (100 - 23) + '"}'
    assert len(frame.encode()) == 100
    assert (await ws.request(frame))["type"] == "pong"


async def test_client_that_keeps_sending_bad_frames_is_closed_1008(connect, settings):
    settings.REALTIME = {"ABUSE_BUDGET": 3}
    _, _, ws = await connect()
    for _ in range(3):
        assert (await ws.request("nope"))["code"] == "bad_json"
    await ws.send("nope")
    assert (await ws.recv())["code"] == "bad_json"
    assert await ws.closed() == 1008


# --- subscribe, backlog, replay ---------------------------------------------------------------


async def test_subscribe_unknown_or_disabled_topic_is_not_found(connect):
    await make_topic("off", enabled=False)
    _, _, ws = await connect()
    for slug in ("nope", "off"):
        answer = await ws.request({"type": "subscribe", "topic": slug, "id": "s"})
        assert answer == {
            "type": "error",
            "id": "s",
            "code": "not_found",
            "message": answer["message"],
            "topic": slug,
        }


async def test_subscribe_sends_subscribed_then_backlog_in_order(connect):
    await make_topic("news", backlog=3)
    await fill("news", 5)
    _, _, ws = await connect()
    answer = await ws.subscribe("news", id=9)
    assert answer == {"type": "subscribed", "id": 9, "topic": "news", "seq": 5, "recovered": False}
    frames = await ws.messages(3)
    assert [f["seq"] for f in frames] == [3, 4, 5]
    assert [f["data"] for f in frames] == [{"n": 3}, {"n": 4}, {"n": 5}]
    assert all(f["topic"] == "news" and f["ts"].endswith("Z") for f in frames)


async def test_subscribe_empty_topic_has_seq_zero(connect):
    await make_topic()
    _, _, ws = await connect()
    assert (await ws.subscribe("news"))["seq"] == 0


async def test_subscribe_since_replays_later_messages_and_recovers(connect):
    await make_topic("news", backlog=1)
    await fill("news", 6)
    _, _, ws = await connect()
    answer = await ws.subscribe("news", since=2)
    assert answer["seq"] == 6 and answer["recovered"] is True
    assert [f["seq"] for f in await ws.messages(4)] == [3, 4, 5, 6]


async def test_subscribe_since_latest_sends_nothing_old_and_recovers(connect):
    await make_topic()
    await fill("news", 3)
    _, _, ws = await connect()
    assert (await ws.subscribe("news", since=3))["recovered"] is True
    await apublish("news", {"n": 4})
    assert [f["seq"] for f in await ws.messages(1)] == [4]


async def test_subscribe_since_pruned_is_not_recovered_and_sends_what_is_left(connect):
    topic = await make_topic("news", retention=3, backlog=1)
    await fill("news", 6)
    await database_sync_to_async(Message.objects.filter(topic=topic, seq__lte=3).delete)()
    _, _, ws = await connect()
    answer = await ws.subscribe("news", since=1)
    assert answer["recovered"] is False
    assert [f["seq"] for f in await ws.messages(3)] == [4, 5, 6]


async def test_subscribe_since_beyond_latest_resets_to_backlog(connect):
    await make_topic("news", backlog=2)
    await fill("news", 3)
    _, _, ws = await connect()
    answer = await ws.subscribe("news", since=50)
    assert answer["recovered"] is False and answer["seq"] == 3
    assert [f["seq"] for f in await ws.messages(2)] == [2, 3]


async def test_live_message_reaches_subscriber(connect):
    await make_topic()
    _, _, ws = await connect()
    await ws.subscribe("news")
    stored = await apublish("news", {"title": "hello <b>"})
    frame = await ws.recv()
    assert frame["type"] == "message" and frame["topic"] == "news"
    assert frame["seq"] == stored.seq == 1
    assert frame["data"] == {"title": "hello <b>"}


async def test_resubscribe_confirms_without_resending(connect):
    await make_topic("news", backlog=5)
    await fill("news", 2)
    _, _, ws = await connect()
    await ws.subscribe("news")
    assert [f["seq"] for f in await ws.messages(2)] == [1, 2]
    again = await ws.subscribe("news", since=0, id="again")
    assert again["seq"] == 2 and again["id"] == "again"
    await apublish("news", {"n": 3})
    assert [f["seq"] for f in await ws.messages(1)] == [3]


async def test_unsubscribe_stops_messages(connect):
    await make_topic("news")
    await make_topic("other")
    _, _, ws = await connect()
    await ws.subscribe("news")
    await ws.subscribe("other")
    assert await ws.request({"type": "unsubscribe", "topic": "news", "id": 4}) == {
        "type": "unsubscribed",
        "topic": "news",
        "id": 4,
    }
    await apublish("news", {"n": 1})
    await apublish("other", {"n": 1})
    frame = await ws.recv()
    assert frame["topic"] == "other"


async def test_unsubscribe_from_topic_not_subscribed_is_answered(connect):
    _, _, ws = await connect()
    assert (await ws.request({"type": "unsubscribe", "topic": "news"}))["type"] == "unsubscribed"


async def test_too_many_subscriptions(connect, settings):
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 2}
    for slug in ("a", "b", "c"):
        await make_topic(slug)
    _, _, ws = await connect()
    await ws.subscribe("a")
    await ws.subscribe("b")
    answer = await ws.request({"type": "subscribe", "topic": "c", "id": 1})
    assert answer["code"] == "too_many_subscriptions" and answer["topic"] == "c"
    await ws.subscribe("a")  # an existing subscription is not a new one
    await ws.request({"type": "unsubscribe", "topic": "b"})
    await ws.subscribe("c")


# --- delivery guarantee under a faulty layer -------------------------------------------------


async def test_gap_from_lost_event_is_filled_from_database(connect, monkeypatch):
    await make_topic()
    _, _, ws = await connect()
    await ws.subscribe("news")
    monkeypatch.setattr(
        fanout, "fan_out_after_commit", lambda message: None
    )  # the layer loses 1, 2
    await apublish("news", {"n": 1})
    await apublish("news", {"n": 2})
    monkeypatch.undo()
    await apublish("news", {"n": 3})
    frames = await ws.messages(3)
    assert [f["seq"] for f in frames] == [1, 2, 3]
    assert [f["data"]["n"] for f in frames] == [1, 2, 3]


async def test_duplicate_event_is_dropped(connect):
    await make_topic()
    _, _, ws = await connect()
    await ws.subscribe("news")
    first = await apublish("news", {"n": 1})
    assert (await ws.recv())["seq"] == 1
    stored = await database_sync_to_async(
        lambda: Message.objects.select_related("topic").get(pk=first.pk)
    )()
    await fanout.send([stored])  # repeated, twice, by the outbox sweep or Redis
    await fanout.send([stored])
    await apublish("news", {"n": 2})
    assert [f["seq"] for f in await ws.messages(1)] == [2]


async def test_frame_for_topic_not_subscribed_is_ignored(connect):
    await make_topic("news")
    await make_topic("other")
    _, _, ws = await connect()
    await ws.subscribe("other")
    await apublish("news", {"n": 1})
    await apublish("other", {"n": 1})
    assert (await ws.recv())["topic"] == "other"


async def test_burst_during_replay_is_delivered_once_in_order(connect):
    await make_topic("news", backlog=50)
    await fill("news", 40)
    _, _, ws = await connect()
    await ws.send({"type": "subscribe", "topic": "news", "since": 0})
    for i in range(10):
        await apublish("news", {"n": 41 + i})
    frames = await ws.recv_until("subscribed")
    frames = [f for f in frames if f["type"] == "message"]
    frames += await ws.messages(50 - len(frames))
    assert [f["seq"] for f in frames] == list(range(1, 51))


# --- access ----------------------------------------------------------------------------------


async def test_private_topic_is_answered_like_a_missing_one(connect):
    await make_topic("secret", private=True)
    _, _, ws = await connect()
    hidden = await ws.request({"type": "subscribe", "topic": "secret", "id": 1})
    missing = await ws.request({"type": "subscribe", "topic": "nothing", "id": 1})
    assert hidden["code"] == missing["code"] == "not_found"
    assert hidden["message"].replace("secret", "X") == missing["message"].replace("nothing", "X")


async def test_private_topic_without_groups_open_to_any_signed_in_user(connect):
    await make_topic("secret", private=True)
    _, _, ws = await connect(user=await make_user())
    assert (await ws.subscribe("secret"))["topic"] == "secret"


@database_sync_to_async
def private_topic_for(group: str) -> Topic:
    topic = Topic.objects.create(slug="secret", private=True)
    topic.groups.add(Group.objects.get_or_create(name=group)[0])
    return topic


async def test_private_topic_with_groups(connect):
    await private_topic_for("members")
    outsider = await make_user("out", groups=["others"])
    member = await make_user("mem", groups=["members"])
    staff = await make_user("boss", staff=True)
    _, _, ws = await connect(user=outsider)
    assert (await ws.request({"type": "subscribe", "topic": "secret"}))["code"] == "not_found"
    for user in (member, staff):
        _, _, ws = await connect(user=user)
        assert (await ws.subscribe("secret"))["topic"] == "secret"


async def test_user_removed_from_group_is_unsubscribed_at_once_and_refused_after(connect):
    await private_topic_for("members")
    member = await make_user("mem", groups=["members"])
    _, _, ws = await connect(user=member)
    await ws.subscribe("secret")
    await database_sync_to_async(member.groups.clear)()
    assert await ws.recv() == {"type": "unsubscribed", "topic": "secret", "code": "forbidden"}
    answer = await ws.request({"type": "subscribe", "topic": "secret"})
    assert answer["code"] == "not_found"
    await make_topic("other")
    await ws.subscribe("other")
    await apublish("secret", {"n": 1})  # no longer subscribed: not delivered
    await apublish("other", {"n": 1})
    assert (await ws.recv())["topic"] == "other"


# --- publish ---------------------------------------------------------------------------------


async def test_visitor_publish_is_stored_acknowledged_and_delivered(connect):
    await make_topic("chat", visitor_publish=True)
    _, _, reader = await connect()
    await reader.subscribe("chat")
    user = await make_user()
    _, _, writer = await connect(user=user)
    answer = await writer.request(
        {"type": "publish", "topic": "chat", "data": {"t": "hi"}, "id": "p1"}
    )
    assert answer == {"type": "published", "id": "p1", "topic": "chat", "seq": 1}
    frame = await reader.recv()
    assert frame["seq"] == 1 and frame["data"] == {"t": "hi"}
    stored = await database_sync_to_async(
        lambda: Message.objects.values("source", "author__username").get()
    )()
    assert stored == {"source": "visitor", "author__username": "ann"}


async def test_publish_refused_where_visitors_may_not(connect):
    await make_topic("news")
    await make_topic("staff-chat", private=True, visitor_publish=True)
    _, _, ws = await connect()
    answer = await ws.request({"type": "publish", "topic": "news", "data": 1, "id": 3})
    assert answer["code"] == "forbidden" and answer["topic"] == "news" and answer["id"] == 3
    answer = await ws.request({"type": "publish", "topic": "staff-chat", "data": 1, "id": 3})
    assert answer["code"] == "not_found" and answer["id"] == 3  # private: not even seen
    answer = await ws.request({"type": "publish", "topic": "nope", "data": 1})
    assert answer["code"] == "not_found"
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_publish_rate_limited_beyond_burst(connect, settings):
    settings.REALTIME = {"PUBLISH_RATE_PER_S": 0.001, "PUBLISH_BURST": 2}
    await make_topic("chat", visitor_publish=True)
    _, _, ws = await connect()
    for _ in range(2):
        assert (await ws.request({"type": "publish", "topic": "chat", "data": 1}))[
            "type"
        ] == "published"
    answer = await ws.request({"type": "publish", "topic": "chat", "data": 1, "id": 1})
    assert answer["code"] == "rate_limited" and answer["id"] == 1
    assert await database_sync_to_async(Message.objects.count)() == 2


async def test_unexpected_failure_is_server_error_and_connection_survives(connect, monkeypatch):
    from realtime import topics

    async def boom(*args, **kwargs):
        raise RuntimeError("database on fire")

    _, _, ws = await connect()
    monkeypatch.setattr(topics, "access", boom)
    answer = await ws.request({"type": "subscribe", "topic": "news", "id": 5})
    assert answer["type"] == "error" and answer["code"] == "server_error" and answer["id"] == 5
    assert (await ws.request({"type": "ping"}))["type"] == "pong"


async def test_connect_subscribe_disconnect_are_logged(connect, caplog):
    caplog.set_level(logging.INFO, logger="realtime.consumer")
    await make_topic()
    _, _, ws = await connect()
    await ws.subscribe("news")
    await ws.c.disconnect(code=1000)
    text = caplog.text
    assert "connect " in text and "subscribe " in text and "topic=news" in text
    assert "disconnect " in text and "code=1000" in text


async def test_disabling_a_topic_takes_effect_at_once_in_this_process(connect):
    topic = await make_topic("news")
    _, _, ws = await connect()
    await ws.subscribe("news")  # the topic row is now cached
    topic.enabled = False
    await database_sync_to_async(topic.save)()
    answer = await ws.request({"type": "subscribe", "topic": "news", "id": 1})
    assert answer["code"] == "not_found"


async def test_latest_seq_stays_current_while_no_local_connection_holds_the_topic(connect):
    await make_topic("news", backlog=0)
    _, _, first = await connect()
    await first.subscribe("news")
    await apublish("news", {"n": 1})
    assert (await first.recv())["seq"] == 1
    await first.request({"type": "unsubscribe", "topic": "news"})
    for i in (2, 3):
        await apublish("news", {"n": i})
    _, _, second = await connect()
    await make_topic("marker")
    await second.subscribe("marker")
    await apublish("marker", "barrier")  # once it arrives, 2 and 3 have passed the hub
    assert (await second.recv())["topic"] == "marker"
    assert (await second.subscribe("news"))["seq"] == 3


async def test_a_family_rule_that_raises_answers_server_error_and_keeps_the_socket(connect):
    import realtime
    from realtime import families

    def broken(user, key):
        raise RuntimeError("the rule's database is away")

    realtime.family("brittle", replace=True, can_read=broken)(lambda user, key: True)
    try:
        ok, _, ws = await connect()
        answer = await ws.request({"type": "subscribe", "topic": "brittle:1", "id": 9})
        assert answer["type"] == "error" and answer["code"] == "server_error"
        assert answer["id"] == 9
        assert (await ws.request({"type": "ping", "id": 10}))["type"] == "pong"
        # Asked again on the next subscribe (a failure is not cached).
        answer = await ws.request({"type": "subscribe", "topic": "brittle:2", "id": 11})
        assert answer["code"] == "server_error"
    finally:
        families.unregister("brittle")


async def test_rule_answers_are_cached_per_connection_until_access_changes(connect):
    import realtime
    from realtime import families

    asked: list[str] = []

    def rule(user, key):
        asked.append(key)
        return True

    realtime.family("counted", replace=True)(rule)
    try:
        ok, _, ws = await connect()
        for n in range(3):
            assert (await ws.request({"type": "subscribe", "topic": "counted:1", "id": n}))[
                "type"
            ] == "subscribed"
        assert asked == ["1"]
        from realtime import engine

        (c,) = engine.loop_hubs()[0].connections  # the consumer's Connection
        c.access_changed({"topics": ["counted:1"]})
        for task in list(c.tasks):
            await task
        assert asked == ["1", "1"]
    finally:
        families.unregister("counted")
