"""``{% live_topic %}``: what it renders on the server, and its wrong options."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory

from realtime.outbox import publish

pytestmark = pytest.mark.django_db


def render(text: str, user=None) -> str:
    request = RequestFactory().get("/")
    request.user = user or AnonymousUser()
    return Template("{% load realtime %}" + text).render(Context({"request": request}))


def test_renders_the_latest_messages_with_their_rendering_and_the_seq(topic_factory):
    topic = topic_factory(slug="news")
    for i in range(5):
        publish(topic, {"title": f"item {i} <x>"})
    html = render('{% live_topic "news" limit=3 id="stream" %}')
    assert 'data-live-topic="news"' in html and 'data-seq="5"' in html and 'id="stream"' in html
    assert html.index("item 4") < html.index("item 3") < html.index("item 2")
    assert "item 1" not in html and "&lt;x&gt;" in html and "<x>" not in html
    oldest_first = render('{% live_topic "news" limit=2 order="oldest-first" %}')
    assert oldest_first.index("item 3") < oldest_first.index("item 4")
    replace = render('{% live_topic "news" mode="replace" meta=False class="latest" %}')
    assert replace.count("<li") == 1 and "item 4" in replace and 'class="seq"' not in replace
    assert 'class="live-region latest"' in replace and "realtime/pages/live.js" in replace


def test_an_empty_topic_says_so_and_private_or_missing_ones_render_nothing(topic_factory):
    topic_factory(slug="quiet")
    topic_factory(slug="secret", private=True)
    assert "No messages yet." in render('{% live_topic "quiet" %}')
    assert "Nothing here" in render('{% live_topic "quiet" empty="Nothing here" %}')
    assert render('{% live_topic "secret" %}').strip() == ""
    assert render('{% live_topic "missing" %}').strip() == ""


@pytest.mark.parametrize(
    "options",
    ['order="sideways"', 'mode="stack"', "limit=0", "limit=101", 'limit="many"'],
)
def test_wrong_options_are_template_errors(topic_factory, options):
    topic_factory(slug="news")
    with pytest.raises(TemplateSyntaxError, match="live_topic"):
        render('{% live_topic "news" ' + options + " %}")
