"""The admin: topics with recent messages; adding a message publishes it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from realtime.models import Message, Topic

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(django_user_model):
    user = django_user_model.objects.create_superuser("boss", "b@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


def test_topic_changelist_and_change_page_show_recent_messages(staff_client):
    from realtime.outbox import publish

    topic = Topic.objects.create(slug="news", title="News")
    publish(topic, {"title": "<script>alert(1)</script>"})
    assert staff_client.get("/admin/realtime/topic/?q=news").status_code == 200
    page = staff_client.get(f"/admin/realtime/topic/{topic.pk}/change/").content.decode()
    assert "Latest 10" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


def test_topic_admin_refuses_backlog_over_retention(staff_client):
    response = staff_client.post(
        "/admin/realtime/topic/add/",
        {
            "slug": "x",
            "title": "",
            "description": "",
            "enabled": "on",
            "backlog": 50,
            "retention": 10,
        },
    )
    assert response.status_code == 200
    assert "cannot exceed the retention" in response.content.decode()
    assert not Topic.objects.exists()


def test_topic_admin_refuses_bad_slug(staff_client):
    response = staff_client.post(
        "/admin/realtime/topic/add/",
        {"slug": "Bad Slug", "enabled": "on", "backlog": 1, "retention": 10},
    )
    assert response.status_code == 200 and "A topic slug is" in response.content.decode()


async def test_admin_add_message_publishes_to_subscribers(staff_client, listener):
    topic = await database_sync_to_async(Topic.objects.create)(slug="news")
    response = await database_sync_to_async(staff_client.post)(
        "/admin/realtime/message/add/", {"topic": topic.pk, "data": '{"title": "from admin"}'}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    _, _, frame = await listener.next()
    assert frame["data"] == {"title": "from admin"}
    message = await database_sync_to_async(Message.objects.select_related("author").get)()
    assert (message.seq, message.source, message.author.username) == (1, "admin", "boss")


def test_admin_add_message_refuses_bad_json_and_stores_nothing(staff_client):
    topic = Topic.objects.create(slug="news")
    response = staff_client.post(
        "/admin/realtime/message/add/", {"topic": topic.pk, "data": "{not json"}
    )
    assert response.status_code == 200
    assert "Enter a valid JSON" in response.content.decode()
    assert Topic.objects.get().last_seq == 0 and not Message.objects.exists()


def test_admin_add_message_offers_only_enabled_topics(staff_client):
    off = Topic.objects.create(slug="off", enabled=False)
    response = staff_client.post("/admin/realtime/message/add/", {"topic": off.pk, "data": "1"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Message.objects.exists()


def test_messages_are_view_only(staff_client):
    from realtime.outbox import publish

    Topic.objects.create(slug="news")
    message = publish("news", {"a": 1})
    page = staff_client.get(f"/admin/realtime/message/{message.pk}/change/")
    assert page.status_code == 200 and b'name="data"' not in page.content
    staff_client.post(f"/admin/realtime/message/{message.pk}/change/", {"data": '{"a": 2}'})
    staff_client.post(f"/admin/realtime/message/{message.pk}/delete/", {"post": "yes"})
    message.refresh_from_db()
    assert message.data == {"a": 1}
    assert staff_client.get("/admin/realtime/message/?fanned_out_at__isempty=0").status_code == 200


def test_send_test_message_action_publishes_to_selected_enabled_topics(staff_client):
    a = Topic.objects.create(slug="a")
    off = Topic.objects.create(slug="off", enabled=False)
    response = staff_client.post(
        "/admin/realtime/topic/",
        {"action": "send_test_message", "_selected_action": [a.pk, off.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Test message sent: a#1." in page and "Topic off is disabled" in page
    message = Message.objects.get()
    assert message.topic == a and message.data["test"] is True and message.data["by"] == "boss"


async def test_topic_page_shows_live_view_and_subscribed_connections(staff_client, connect):
    import asyncio

    from realtime.fanout import subscriber_count

    topic = await database_sync_to_async(Topic.objects.create)(slug="news")
    _, _, ws = await connect()
    await ws.subscribe("news")
    async with asyncio.timeout(10):  # the hub reports presence every few seconds
        while await database_sync_to_async(subscriber_count)("news") != 1:
            await asyncio.sleep(0.1)
    page = (
        await database_sync_to_async(staff_client.get)(f"/admin/realtime/topic/{topic.pk}/change/")
    ).content.decode()
    assert 'id="topic-page" data-topic="news"' in page
    assert "realtime/pages/admin.js" in page and 'data-live-topic="news"' in page
    assert 'data-watching="news">1</strong>' in page
    # The live panel comes before the form's fields; links to the site and the console.
    assert page.index('id="topic-page"') < page.index('name="slug"')
    assert "View on site" in page and 'href="/console/?topic=news"' in page
    presence = await database_sync_to_async(staff_client.get)("/admin/realtime/topic/presence.json")
    assert presence.json() == {"topics": {"news": 1}}


def test_message_list_previews_data_and_add_starts_from_an_empty_object(staff_client):
    from realtime.outbox import publish

    topic = Topic.objects.create(slug="news", title="News")
    message = publish(topic, {"title": "Preview <me>", "body": "x" * 200})
    listing = staff_client.get("/admin/realtime/message/?source__exact=api").content.decode()
    assert "Preview &lt;me&gt;" in listing and "…" in listing  # the data, cut short
    add = staff_client.get("/admin/realtime/message/add/").content.decode()
    assert "\n{}</textarea>" in add and "null</textarea>" not in add
    assert "realtime/messages/SLUG.html" in add  # the help text explains rendering
    view = staff_client.get(f"/admin/realtime/message/{message.pk}/change/").content.decode()
    assert "as visitors see it" in view.lower() and '<article class="message message-news">' in view
    assert "Preview &lt;me&gt;" in view and "Preview <me>" not in view


def test_the_status_page_is_for_staff_and_reports_every_process(staff_client, settings):
    import time

    from realtime import fanout, keys
    from realtime.outbox import publish

    topic = Topic.objects.create(slug="news")
    publish(topic, 1)
    _, prefix = keys.redis_config()
    fanout.client().hset(
        keys.hub_stats_key(prefix, "9-abc"),
        mapping={
            "pid": 9,
            "host": "web1",
            "connections": 3,
            "subscriptions": 4,
            "frames": 50,
            "state": "subscribed",
        },
    )
    fanout.record_tick("web1:77:xyz")
    page = staff_client.get("/admin/realtime/topic/status/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Realtime status" in text and "web1" in text and "spark-frames" in text
    data = staff_client.get("/admin/realtime/topic/status.json").json()
    assert data["redis"] == "ok" and data["outbox_pending"] in (0, 1)
    assert {"host": "web1", "pid": 9, "connections": 3}.items() <= data["processes"][0].items()
    assert data["totals"]["subscriptions"] >= 4 and data["published_last_10s"] == 1
    assert data["scheduler"]["owner"] == "web1:77:xyz"
    assert (
        time.time() - 60 < __import__("datetime").datetime.fromisoformat(data["time"]).timestamp()
    )
    visitor = Client()
    assert visitor.get("/admin/realtime/topic/status.json").status_code == 302  # to the login
    assert "Realtime status" in staff_client.get("/admin/").content.decode()  # linked


def test_add_message_previews_the_rendering_without_storing(staff_client):
    topic = Topic.objects.create(slug="news")
    page = staff_client.get("/admin/realtime/message/add/").content.decode()
    assert 'id="message-preview"' in page and "message_preview.js" in page
    url = "/admin/realtime/message/preview/"
    answer = staff_client.post(url, {"topic": topic.pk, "data": '{"title": "<i>Soon</i>"}'})
    assert answer.status_code == 200
    assert "&lt;i&gt;Soon&lt;/i&gt;" in answer.json()["html"]
    assert Message.objects.count() == 0  # nothing stored
    for fields, message in [
        ({"data": "{}"}, "Choose a topic"),
        ({"topic": topic.pk, "data": "{nope"}, "Not JSON"),
        ({"topic": topic.pk, "data": '"\\ud800"'}, "surrogate"),
    ]:
        refused = staff_client.post(url, fields)
        assert refused.status_code == 400 and message in refused.json()["error"]
    assert staff_client.get(url).status_code == 405
    assert Client().post(url, {"topic": topic.pk, "data": "1"}).status_code == 302


def test_message_list_starts_with_the_newest_and_writes_times_for_the_visitors_zone(
    staff_client,
):
    from realtime.outbox import publish

    topic = Topic.objects.create(slug="news", title="News")
    first, second = publish(topic, "first-one"), publish(topic, "second-one")
    listing = staff_client.get("/admin/realtime/message/").content.decode()
    assert listing.index("second-one") < listing.index("first-one")
    # Times as <time datetime> (UTC), shown in the visitor's zone by admin_times.js, like
    # the live panel; the script is on every admin page.
    assert f'<time datetime="{second.created_at.isoformat()}">' in listing
    assert "realtime/pages/admin_times.js" in listing
    page = staff_client.get(f"/admin/realtime/topic/{topic.pk}/change/").content.decode()
    assert f'<time datetime="{first.created_at.isoformat()}">' in page
