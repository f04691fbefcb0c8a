"""The visitor's pages in a real Chromium against real daphne, scheduler and Redis."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import live
from tests.helpers.processes import manage

pytestmark = pytest.mark.browser


def test_home_goes_live_and_shows_a_published_message(site, new_page):
    page = new_page()
    live(page, site.url + "/")
    news = page.locator('[data-topic="news"]')
    expect(news.locator(".latest")).to_contain_text("Welcome")
    site.publish("news", json.dumps({"title": "Fresh from manage.py"}))
    expect(news.locator(".latest")).to_contain_text("Fresh from manage.py")
    expect(news.locator(".seq")).to_have_text("#2")
    # Rendered by the topic's template (realtime/messages/clock.html): a time, not JSON.
    expect(page.locator('[data-topic="clock"] .latest time.clock')).to_have_count(1)
    expect(page.locator('[data-topic="clock"] .latest')).not_to_contain_text("{")


def test_visitor_publishes_on_chat_and_another_page_sees_it(site, new_page):
    writer, reader = new_page(), new_page()
    live(reader, site.url + "/topics/chat/")
    live(writer, site.url + "/topics/chat/")
    writer.fill("#publish-text", "hello from the browser")
    writer.click("text=Publish")
    expect(writer.locator("#publish-result")).to_have_text("published as #1")
    expect(reader.locator("#stream li").first.locator(".data")).to_contain_text(
        "hello from the browser"
    )
    expect(reader.locator("#stream li").first.locator(".seq")).to_have_text("#1")


def test_no_publish_form_where_visitors_may_not_publish(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/news/")
    expect(page.locator("#stream li")).to_have_count(1)
    expect(page.locator("#publish-form")).to_have_count(0)


def test_private_topic_hidden_from_anonymous_and_open_to_group_member(site, new_page):
    manage(
        site.env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User, Group;"
        "u = User.objects.create_user('mia', password='mia-pass-123');"
        "u.groups.add(Group.objects.get(name='members'))",
    )
    site.publish("staff-room", json.dumps({"text": "members only"}))
    page = new_page()
    live(page, site.url + "/")
    expect(page.locator('[data-topic="staff-room"]')).to_have_count(0)
    page.goto(site.url + "/topics/staff-room/")
    expect(page).to_have_url(site.url + "/accounts/login/?next=/topics/staff-room/")
    # Through the socket too: the server refuses the subscription.
    answer = page.evaluate("""() => new Promise((resolve) => {
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws/', 'realtime.v1');
        ws.onmessage = (e) => { const f = JSON.parse(e.data);
          if (f.type === 'welcome')
            ws.send(JSON.stringify({type: 'subscribe', topic: 'staff-room'}));
          else resolve(f); };
    })""")
    assert answer["type"] == "error" and answer["code"] == "not_found"
    page.fill("#id_username", "mia")
    page.fill("#id_password", "mia-pass-123")
    page.click("button[type=submit]")
    expect(page).to_have_url(site.url + "/topics/staff-room/")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#stream li .data")).to_contain_text("members only")


def test_html_in_message_data_is_shown_as_text_and_runs_nothing(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/news/")
    payload = "<script>window.__xss = 1</script><img src=x onerror='window.__xss = 2'>"
    site.publish("news", json.dumps({"html": payload}))
    item = page.locator("#stream li").first
    expect(item.locator(".data")).to_contain_text(payload)
    assert item.locator("img").count() == 0 and item.locator("script").count() == 0
    assert page.evaluate("window.__xss") is None
    live(page, site.url + "/")  # the home page renders it server-side first
    expect(page.locator('[data-topic="news"] .latest')).to_contain_text("<img src=x")
    assert page.locator('[data-topic="news"] img').count() == 0
    assert page.evaluate("window.__xss") is None


def test_reconnect_without_loss_when_daphne_restarts(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/news/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#stream li")).to_have_count(1)
    site.stop_daphne()
    expect(page.locator("#status")).to_have_text("reconnecting")
    seqs = [site.publish("news", json.dumps({"n": i})) for i in range(1, 6)]
    assert seqs == [2, 3, 4, 5, 6]
    site.start_daphne()
    expect(page.locator("#status")).to_have_text("live", timeout=45_000)
    expect(page.locator("#stream li")).to_have_count(6)
    shown = page.locator("#stream li .seq").all_text_contents()
    assert shown == ["#6", "#5", "#4", "#3", "#2", "#1"]  # newest on top, each once
    assert page.evaluate("window.__sameDocument") is True  # no reload


def test_console_sends_a_raw_frame_and_shows_the_answer(site, new_page):
    page = new_page()
    page.goto(site.url + "/console/")
    expect(page.locator("#console-state")).to_have_text("open")
    expect(page.locator("#console-log")).to_contain_text('"type":"welcome"')
    page.fill("#console-frame", '{"type": "ping", "id": "from-console"}')
    page.click("#console-send")
    expect(page.locator("#console-log li.out").first).to_contain_text("from-console")
    expect(page.locator("#console-log li.in").first).to_contain_text(
        '{"type":"pong","id":"from-console"}'
    )
    page.fill("#console-frame", "not json")
    page.click("#console-send")
    expect(page.locator("#console-log li.in").first).to_contain_text("bad_json")
    page.click("#console-disconnect")
    expect(page.locator("#console-state")).to_have_text("closed (1000)")


def test_pages_go_live_over_sse_when_websockets_are_blocked(site, new_page):
    """Every WebSocket to /ws/ is closed before its welcome (as by a proxy that blocks them):
    the client falls back to Server-Sent Events, receives live messages, and publishes over
    HTTP with CSRF, on the same page without any change."""
    page = new_page()
    page.route_web_socket("**/ws/", lambda ws: ws.close())
    live(page, site.url + "/topics/chat/")
    assert page.evaluate("window.realtimeConsumer.mode") == "sse"
    site.publish("chat", json.dumps({"text": "pushed over sse"}))
    expect(page.locator("#stream li").first).to_contain_text("pushed over sse")
    page.fill("#publish-text", "written over http")
    page.click("#publish-form button")
    expect(page.locator("#publish-result")).to_have_text("published as #2")
    expect(page.locator("#stream li").first).to_contain_text("written over http")
    expect(page.locator("#stream li")).to_have_count(2)


def test_enter_sends_on_the_chat_page_and_shift_enter_starts_a_line(site, new_page):
    page = new_page()
    live(page, site.url + "/topics/chat/")
    page.fill("#publish-text", "first line")
    page.press("#publish-text", "Shift+Enter")
    page.type("#publish-text", "second line")
    page.press("#publish-text", "Enter")
    expect(page.locator("#publish-result")).to_have_text("published as #1")
    expect(page.locator("#stream li").first.locator(".data")).to_contain_text("second line")
    assert page.input_value("#publish-text") == ""


def test_a_tab_whose_session_ended_shows_signed_out_and_stops(site, new_page):
    manage(
        site.env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User;"
        "User.objects.create_user('lea', password='lea-pass-123')",
    )
    page = new_page()
    page.goto(site.url + "/accounts/login/?next=/topics/chat/")
    page.fill("#id_username", "lea")
    page.fill("#id_password", "lea-pass-123")
    page.click("button[type=submit]")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#user")).to_contain_text("lea")
    other = page.context.new_page()  # another tab of the same browser signs out
    other.goto(site.url + "/topics/news/")
    other.click("text=Sign out")
    expect(page.locator("#status")).to_have_text("signed out")  # closed with 4401
    expect(page.locator("#user")).not_to_contain_text("lea")
    expect(page.locator("#signed-out")).to_have_attribute(
        "href", "/accounts/login/?next=%2Ftopics%2Fchat%2F"
    )
    state = page.evaluate(
        "() => [realtimeConsumer.stopped, realtimeConsumer.reconnectTimer,"
        " realtimeConsumer.active.isOpen]"
    )
    assert state == [True, None, False]  # and nothing will reconnect it
