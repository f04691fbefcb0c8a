"""Live regions ({% live_topic %}) and rendered messages in Chromium: rendered, not JSON; a
message published between the page's HTML and its subscribe shows once; a state topic resumed
after 50 missed messages gets exactly one; one time format on a page."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import live
from tests.helpers.processes import manage

pytestmark = pytest.mark.browser

BURST = (
    "from realtime.outbox import publish_many\n"
    "publish_many([('{slug}', {{'points': i}}) for i in range({count})])\n"
    "from realtime.models import Topic\n"
    "print(Topic.objects.get(slug='{slug}').last_seq)\n"
)


def test_news_and_chat_show_rendered_messages_live(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/news/")
    first = page.locator("#stream li").first
    expect(first.locator(".headline")).to_have_text("Welcome")  # rendered by the server
    site.publish("news", json.dumps({"title": "Hello", "body": "A <b>bold</b> claim"}))
    first = page.locator("#stream li").first
    expect(first.locator(".headline")).to_have_text("Hello")
    expect(first.locator(".body")).to_have_text("A <b>bold</b> claim")  # as text
    assert "{" not in first.inner_text()
    chat = new_page()
    live(chat, site.url + "/topics/chat/")
    site.publish("chat", json.dumps({"text": "hi there"}))
    line = chat.locator("#stream li").first
    expect(line.locator(".message-chat .author")).to_have_text("visitor")
    expect(line.locator(".message-chat .text")).to_have_text("hi there")


def test_a_message_between_the_html_and_the_subscribe_shows_once(site, new_page):
    page = new_page()
    published = []

    def hold_live_js(route):
        # The page's HTML is rendered; before its script subscribes, a message is published.
        published.append(site.publish("news", json.dumps({"title": "In between"})))
        route.continue_()

    page.route("**/static/realtime/pages/live.js", hold_live_js)
    page.goto(site.url + "/topics/news/")
    expect(page.locator("#status")).to_have_text("live")
    (seq,) = published
    expect(page.locator(f'#stream li[data-seq="{seq}"]')).to_have_count(1)
    expect(page.locator("#stream li")).to_have_count(seq)  # 1 … seq, each once
    later = site.publish("news", json.dumps({"title": "After"}))
    expect(page.locator(f'#stream li[data-seq="{later}"]')).to_have_count(1)
    expect(page.locator("#stream li")).to_have_count(later)


def test_a_state_topic_resumed_after_50_missed_messages_gets_one(site, new_page):
    manage(site.env, "topics", "add", "score", "--kind", "state")
    site.publish("score", json.dumps({"points": -1}))
    page = new_page()
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
    last = []

    def hold_live_js(route):
        last.append(int(site.shell(BURST.format(slug="score", count=50)).split()[-1]))
        route.continue_()

    page.route("**/static/realtime/pages/live.js", hold_live_js)
    page.goto(site.url + "/")
    region = page.locator('[data-live-topic="score"]')
    expect(region.locator(f'li[data-seq="{last[0]}"]')).to_have_count(1)
    expect(region.locator("li")).to_have_count(1)  # mode replace
    # A ping answered means every frame sent before it arrived (frames keep their order).
    page.evaluate("window.realtimeConsumer.ping()")
    for _ in range(100):
        if any(isinstance(f, str) and '"type":"pong"' in f for f in frames):
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError("no pong")
    messages = [
        json.loads(f)["seq"]
        for f in frames
        if isinstance(f, str) and '"topic":"score"' in f and '"type":"message"' in f
    ]
    assert messages == [last[0]]


def test_times_on_a_page_share_one_format(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/news/")
    site.publish("news", json.dumps({"title": "Now"}))
    expect(page.locator("#stream li")).to_have_count(2)
    mismatched = page.evaluate(
        """() => [...document.querySelectorAll('time[datetime]')]
             .filter((t) => t.textContent !== new Date(t.dateTime).toLocaleTimeString())
             .map((t) => t.outerHTML)"""
    )
    assert mismatched == []
    agos = page.locator("time[data-ago]").evaluate_all("els => els.map(e => e.dataset.ago)")
    assert agos and all(a in ("just now",) or a.endswith("ago") for a in agos)
