"""The admin as an operator's console, in Chromium: the status page updates by itself, the
topic list's "watching now" column follows visitors, the topic page is live."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

MAKE_ADMIN = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_superuser('boss', 'b@example.com', 'boss-pass-123')\n"
)


def sign_in(page, site):
    page.goto(site.url + "/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-pass-123")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("Realtime status")


def test_status_page_and_watching_column_update_live(site, new_page):
    site.shell(MAKE_ADMIN)
    admin = new_page()
    sign_in(admin, site)
    admin.goto(site.url + "/admin/realtime/topic/status/")
    status = admin.locator("#realtime-status")
    expect(status).to_have_attribute("data-updates", "2", timeout=10_000)  # it polls
    expect(admin.locator("#processes tbody tr").first).to_contain_text("subscribed", timeout=10_000)
    before = int(admin.locator("#fig-connections").inner_text())
    visitor = new_page()
    visitor.goto(site.url + "/topics/chat/")
    expect(visitor.locator("#status")).to_have_text("live")
    expect(admin.locator("#fig-connections")).to_have_text(str(before + 1), timeout=10_000)
    site.publish("chat", json.dumps({"text": "counted"}))
    expect(admin.locator("#spark-connections polyline")).to_have_count(1)
    expect(admin.locator("#scheduler")).to_contain_text("Leader")
    admin.goto(site.url + "/admin/realtime/topic/")
    cell = admin.locator('[data-watching="chat"]')
    expect(cell).to_have_text("1", timeout=10_000)
    visitor.close()
    expect(cell).to_have_text("0", timeout=15_000)


def test_topic_page_in_the_admin_is_live_at_the_top(site, new_page):
    site.shell(MAKE_ADMIN)
    admin = new_page()
    sign_in(admin, site)
    admin.goto(site.url + "/admin/realtime/topic/")
    admin.get_by_role("link", name="news", exact=True).first.click()
    expect(admin.locator("#status")).to_have_text("live")
    expect(admin.locator("#topic-error")).to_be_hidden()  # no empty red box
    site.publish("news", json.dumps({"title": "Seen in the admin"}))
    expect(admin.locator("#stream li").first.locator(".headline")).to_have_text("Seen in the admin")
    expect(admin.get_by_role("link", name="Open console for this topic")).to_be_visible()
    expect(admin.get_by_role("link", name="View on site")).to_be_visible()
