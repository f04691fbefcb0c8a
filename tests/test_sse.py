"""Server-Sent Events against real daphne: live messages, resume from Last-Event-ID across
topics (exactly what was missed), the since query, access rules and every refusal."""

from __future__ import annotations

import json

import pytest

from tests.helpers.processes import manage
from tests.helpers.sse import EventSourceClient


@pytest.fixture
def site(live_site):
    site = live_site(scheduler=False)
    manage(site.env, "topics", "add", "alerts", "--backlog", "0")
    return site


def publish(site, slug: str, data) -> int:
    return site.publish(slug, json.dumps(data))


def test_events_stream_live_messages_with_a_cursor(site):
    stream = EventSourceClient(f"{site.url}/events/?topic=chat&topic=alerts")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-accel-buffering"] == "no"
        subscribed = [stream.next(), stream.next()]
        assert [e["event"] for e in subscribed] == ["subscribed", "subscribed"]
        assert 2000 <= stream.retry <= 4000
        seq = publish(site, "chat", {"text": "over sse"})
        (event,) = stream.messages(1)
        assert event["data"]["type"] == "message" and event["data"]["seq"] == seq
        assert event["data"]["data"] == {"text": "over sse"} and "html" in event["data"]
        assert event["id"] == f"chat:{seq},alerts:0"
        alert = publish(site, "alerts", "fire")
        (event,) = stream.messages(1)
        assert event["id"] == f"chat:{seq},alerts:{alert}"
    finally:
        stream.close()


def test_reconnecting_with_last_event_id_replays_exactly_what_was_missed(site):
    stream = EventSourceClient(f"{site.url}/events/?topic=chat&topic=alerts")
    stream.next(), stream.next()
    publish(site, "chat", "a")
    publish(site, "alerts", "b")
    seen = stream.messages(2)
    cursor = seen[-1]["id"]
    stream.close()
    missed = [("chat", publish(site, "chat", f"c{i}")) for i in range(3)]
    missed += [("alerts", publish(site, "alerts", "d"))]
    again = EventSourceClient(
        f"{site.url}/events/?topic=chat&topic=alerts", {"Last-Event-ID": cursor}
    )
    try:
        got = again.messages(4)
        assert sorted((e["data"]["topic"], e["data"]["seq"]) for e in got) == sorted(missed)
        by_topic = {}
        for e in got:
            by_topic.setdefault(e["data"]["topic"], []).append(e["data"]["seq"])
        assert all(seqs == sorted(seqs) for seqs in by_topic.values())
        # Nothing twice: a new message comes next, nothing replayed again.
        fresh = publish(site, "chat", "new")
        (event,) = again.messages(1)
        assert event["data"]["seq"] == fresh
    finally:
        again.close()


def test_since_query_resumes_a_rendered_page(site):
    first = publish(site, "alerts", 1)
    second = publish(site, "alerts", 2)
    stream = EventSourceClient(f"{site.url}/events/?topic=alerts&since={first}")
    try:
        (event,) = stream.messages(1)
        assert event["data"]["seq"] == second
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "bad_request"),
        ("?topic=Bad%20Slug", 400, "bad_request"),
        ("?topic=chat&since=chat:x", 400, "bad_request"),
        ("?topic=no-such", 404, "not_found"),
        ("?topic=staff-room", 404, "not_found"),  # private: like a missing topic
        ("?topic=chat&topic=staff-room", 404, "not_found"),
    ],
)
def test_refusals_before_the_stream_are_http_statuses(site, query, status, code):
    stream = EventSourceClient(f"{site.url}/events/{query}")
    try:
        assert stream.status == status
        body = stream.json_body()
        assert body["error"] == code and body["message"]
    finally:
        stream.close()


def test_too_many_topics_and_wrong_method(site):
    topics = "&".join(f"topic=t{i}" for i in range(101))
    stream = EventSourceClient(f"{site.url}/events/?{topics}")
    assert stream.status == 400 and stream.json_body()["error"] == "too_many_subscriptions"
    stream.close()
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{site.url}/events/?topic=chat", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405


MAKE_MEMBER = (
    "from django.contrib.auth.models import Group, User\n"
    "ann = User.objects.create_user('ann', password='ann-pass-123')\n"
    "ann.groups.add(Group.objects.get(name='members'))\n"
)


def test_private_topics_need_the_session_and_logout_ends_the_stream(site):
    from tests.helpers.browserless import Browserless

    site.shell(MAKE_MEMBER)
    browser = Browserless(site.url)
    key = browser.login("ann", "ann-pass-123")
    cookie = {"Cookie": f"sessionid={key}"}
    stream = EventSourceClient(f"{site.url}/events/?topic=staff-room", cookie)
    try:
        assert stream.status == 200
        assert stream.next()["event"] == "subscribed"
        seq = publish(site, "staff-room", "members only")
        (event,) = stream.messages(1)
        assert event["data"]["seq"] == seq
        browser.logout()
        ended = stream.next()
        assert ended["event"] == "error" and ended["data"]["error"] == "unauthorized"
        with pytest.raises(ConnectionError):
            stream.next()  # the stream ended
    finally:
        stream.close()


def test_a_stream_cut_while_resuming_resumes_every_topic_exactly_once(site):
    """Every event's cursor names every topic of the stream, also while the stream is still
    replaying its first topic: a cut there resumes the others where they were."""
    chat = [publish(site, "chat", f"c{i}") for i in range(12)]
    alerts = [publish(site, "alerts", f"a{i}") for i in range(5)]
    topics = f"{site.url}/events/?topic=chat&topic=alerts"
    stream = EventSourceClient(topics, {"Last-Event-ID": f"chat:{chat[1]},alerts:{alerts[0]}"})
    try:
        (first,) = stream.messages(1)
    finally:
        stream.close()  # cut during chat's replay, before alerts' turn
    assert first["data"]["seq"] == chat[2]
    assert first["id"] == f"chat:{chat[2]},alerts:{alerts[0]}"
    again = EventSourceClient(topics, {"Last-Event-ID": first["id"]})
    try:
        got = again.messages(len(chat) - 3 + len(alerts) - 1)
        seen = [(e["data"]["topic"], e["data"]["seq"]) for e in got]
        assert seen == [("chat", s) for s in chat[3:]] + [("alerts", s) for s in alerts[1:]]
        fresh = publish(site, "alerts", "new")
        (event,) = again.messages(1)  # nothing replayed twice before it
        assert (event["data"]["topic"], event["data"]["seq"]) == ("alerts", fresh)
    finally:
        again.close()
