"""Messages rendered once by their topic's template, stored with the message and carried by
its frame (``html``): escaping, the template lookup, overrides, failures, and real daphne."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from realtime import fanout, rendering
from realtime.models import Message
from realtime.outbox import publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_news_renders_as_an_article_with_data_escaped(topic_factory):
    topic = topic_factory(slug="news")
    message = publish(topic, {"title": "<b>Big</b> news", "body": "x < y & z"})
    assert '<article class="message message-news">' in message.html
    assert "&lt;b&gt;Big&lt;/b&gt; news" in message.html and "<b>" not in message.html
    assert "x &lt; y &amp; z" in message.html
    assert f'datetime="{message.created_at.isoformat()}"' in message.html
    stored = Message.objects.get(pk=message.pk)
    assert stored.html == message.html  # rendered once, stored
    frame = json.loads(fanout.frame(stored))
    assert frame["html"] == message.html and frame["data"]["title"] == "<b>Big</b> news"


def test_a_topic_without_a_template_gets_readable_key_value_pairs(topic_factory):
    topic = topic_factory(slug="figures")
    message = publish(topic, {"visits": 12, "nested": {"a": [1, 2]}})
    assert '<dl class="fields">' in message.html
    assert "<dt>visits</dt><dd>12</dd>" in message.html
    assert "{" not in message.html.split("nested")[0]  # no JSON braces for flat values
    text = publish(topic, "just <text>")
    assert '<p class="text">just &lt;text&gt;</p>' in text.html


def test_chat_names_the_author_or_visitor(topic_factory, django_user_model):
    topic = topic_factory(slug="chat")
    alice = django_user_model.objects.create_user("alice", password="pw-123-long")
    by_alice = publish(topic, {"text": "hi"}, source="visitor", user=alice)
    anonymous = publish(topic, {"text": "hello"}, source="visitor")
    assert '<span class="author">alice</span>' in by_alice.html
    assert '<span class="author">visitor</span>' in anonymous.html


def test_project_templates_override_the_apps(topic_factory, settings, tmp_path):
    folder = tmp_path / "realtime" / "messages"
    folder.mkdir(parents=True)
    (folder / "default.html").write_text("<em>{{ data.text }}</em>")
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    ]
    message = publish(topic_factory(slug="anything"), {"text": "<i>"})
    assert message.html == "<em>&lt;i&gt;</em>"


def test_a_failing_template_stores_and_sends_the_message_without_html(
    topic_factory, settings, tmp_path, caplog
):
    folder = tmp_path / "realtime" / "messages"
    folder.mkdir(parents=True)
    (folder / "broken.html").write_text("{% if %}")
    (folder / "huge.html").write_text("{% for i in data %}{{ i }}{% endfor %}")
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    ]
    message = publish(topic_factory(slug="broken"), {"text": "still here"})
    assert message.html == "" and "rendering broken#1 failed" in caplog.text
    assert "html" not in json.loads(fanout.frame(message))
    big = publish(topic_factory(slug="huge"), ["x" * 1000] * 30)
    assert big.html == "" and Message.objects.filter(pk=big.pk).exists()
    assert rendering.template_names("a") == [
        "realtime/messages/a.html",
        "realtime/messages/default.html",
    ]


async def test_live_frames_and_replays_carry_the_same_rendering(live_site):
    site = live_site(scheduler=False)
    origin = f"http://127.0.0.1:{site.port}"
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": "chat", "since": 0}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await asyncio.to_thread(site.publish, "chat", json.dumps({"text": "<script>x</script>"}))
        live = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert "&lt;script&gt;x&lt;/script&gt;" in live["html"] and "<script>" not in live["html"]
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": "chat", "since": 0}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        replayed = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert replayed["seq"] == live["seq"] and replayed["html"] == live["html"]


@pytest.mark.parametrize(
    "data",
    ["text <b>", 0, -3, 2**70, 1.5, 1e300, True, False, None, "é", {"a": [1, "é"]}, [{"b": None}]],
)
def test_data_text_is_indented_json_with_the_c_encoder_for_scalars(data):
    """Scalars take json's C encoder (``indent=`` would take the Python one): the same text."""
    from realtime.templatetags.realtime_tags import data_text

    expected = data if isinstance(data, str) else json.dumps(data, indent=2, ensure_ascii=False)
    assert data_text(data) == expected


def test_a_topics_template_is_looked_up_once_with_debug_off(settings, monkeypatch, tmp_path):
    """The lookup (``select_template``) is remembered per first name with DEBUG off; DEBUG on
    looks up every time, and a changed TEMPLATES setting is seen at once."""
    calls = []
    real = rendering.select_template
    monkeypatch.setattr(
        rendering, "select_template", lambda names: calls.append(names) or real(names)
    )
    settings.DEBUG = False  # (a changed setting empties what was remembered)
    first = rendering.template_for("lookup-once")
    assert rendering.template_for("lookup-once") is first and len(calls) == 1
    settings.DEBUG = True
    rendering.template_for("lookup-once"), rendering.template_for("lookup-once")
    assert len(calls) == 3
    settings.DEBUG = False
    folder = tmp_path / "realtime" / "messages"
    folder.mkdir(parents=True)
    (folder / "lookup-once.html").write_text("<b>{{ data }}</b>")
    assert rendering.template_for("lookup-once").render({"data": 1}) != "<b>1</b>"
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    ]
    assert rendering.template_for("lookup-once").render({"data": 1}) == "<b>1</b>"


ODD_DATA = [
    {"t": 1795903568428423304, "i": 5},
    {},
    {"title": "<b>Big</b> & 'news'", "body": 'say "hi"', "n": None, "ok": True, "x": 1.5},
    {"nested": {"a": [1, "é", None]}, "list": [{"b": "<i>"}], "  spaced  key ": "  a \n b  "},
    {"items": [1, 2], "other": "the template reads data.items as this key"},
    {1: "a key that is not a string", "b": 2},
    "just <text> & more",
    "   ",
    "",
    0,
    -3,
    2**70,
    1e300,
    True,
    None,
    [1, "<two>", {"three": 3}],
    "line one\n\n\tline two",
    "\u00e9\u4e2d\U0001f600",
]


@pytest.mark.parametrize("data", ODD_DATA, ids=range(len(ODD_DATA)))
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", None], ids=["utc", "kolkata", "naive"])
def test_the_apps_default_template_written_in_python_renders_what_the_template_does(
    data, zone, settings
):
    """``render_default`` (the app's default template, written out) gives the very string
    Django's engine gives for that template, whatever the data and the time zone."""
    from datetime import UTC, datetime

    from realtime.models import Topic

    if zone is None:
        settings.USE_TZ = False
        created = datetime(2026, 11, 28, 21, 5, 9, 123456)
    else:
        settings.TIME_ZONE = zone
        created = datetime(2026, 11, 28, 21, 5, 9, 123456, tzinfo=UTC)
    message = Message(topic=Topic(slug="no-such-template"), seq=7, data=data, created_at=created)
    template = rendering.template_for("no-such-template")
    assert rendering.is_apps_default(template)
    try:
        engine = template.render({"message": message, "data": data, "topic": message.topic})
    except ValueError:  # {% for key, value in data.items %} over data["items"]: [1, 2]
        engine = ""  # a failing template: the message goes without html
    fast = rendering.render_default(message)
    if fast is None:  # the data the template reads otherwise: the engine renders it
        assert isinstance(data, dict) and ("items" in data or 1 in data)
    else:
        assert fast == engine
    assert rendering.render(message) == " ".join(engine.split())


def test_a_projects_default_template_is_rendered_by_the_engine(settings, tmp_path):
    """An override of ``default.html`` (or an engine without autoescaping) is not the app's
    template: the engine renders it."""
    from datetime import UTC, datetime

    from realtime.models import Topic

    message = Message(
        topic=Topic(slug="plain"), seq=1, data={"a": "<x>"}, created_at=datetime.now(UTC)
    )
    assert rendering.is_apps_default(rendering.template_for("plain"))
    folder = tmp_path / "realtime" / "messages"
    folder.mkdir(parents=True)
    (folder / "default.html").write_text("<em>{{ data.a }}</em>")
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    ]
    assert not rendering.is_apps_default(rendering.template_for("plain"))
    assert rendering.render(message) == "<em>&lt;x&gt;</em>"
    options = {**settings.TEMPLATES[0]["OPTIONS"], "autoescape": False}
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [], "OPTIONS": options}]
    assert not rendering.is_apps_default(rendering.template_for("plain"))
    assert "<dd><x></dd>" in rendering.render(message)


def test_an_edited_apps_default_template_is_rendered_by_the_engine(monkeypatch):
    """``render_default`` writes out one text of ``default.html``: any other text of that
    file (an edit) is the engine's to render, until ``render_default`` follows it."""
    from django.template import engines

    template = engines["django"].get_template("realtime/messages/default.html")
    assert rendering.is_apps_default(template)
    monkeypatch.setattr(rendering, "DEFAULT_TEMPLATE_SHA256", "0" * 64)
    fresh = engines["django"].get_template("realtime/messages/default.html")
    fresh.__dict__.pop("realtime_apps_default", None)  # (the cached loader's same object)
    assert not rendering.is_apps_default(fresh)
