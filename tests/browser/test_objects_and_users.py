"""Topics for objects and users, in Chromium: who is here and who is typing on the chat page
(a reload shows no leave), the notifications bell (``manage.py notify``, the admin's action),
and the status board kept live by model broadcasting when an editor saves a service."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import live
from tests.helpers.processes import manage

pytestmark = pytest.mark.browser

MAKE_USERS = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('ann', password='ann-pass-123', first_name='Ann')\n"
    "User.objects.create_user('bob', password='bob-pass-123', first_name='Bob')\n"
    "User.objects.create_superuser('boss', 'b@example.com', 'boss-pass-123')\n"
)


@pytest.fixture
def site(live_site):
    running = live_site(scheduler=False, realtime={"PRESENCE_GRACE": 1.0})
    running.shell(MAKE_USERS)
    return running


def signed_in(new_page, site, username: str, next_path: str = "/"):
    page = new_page()
    page.goto(f"{site.url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("button[type=submit], input[type=submit]")
    expect(page.locator("#status")).to_have_text("live")
    return page


def admin_page(new_page, site):
    """A page signed in to the admin as the superuser ``boss``."""
    page = new_page()
    page.goto(site.url + "/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-pass-123")
    page.click("input[type=submit]")
    return page


def test_two_browsers_on_the_chat_see_each_other_and_who_is_typing(site, new_page):
    ann = signed_in(new_page, site, "ann", "/topics/chat/")
    bob = signed_in(new_page, site, "bob", "/topics/chat/")
    for page in (ann, bob):
        members = page.locator("#presence-members li")
        expect(members).to_have_count(2)
        expect(members).to_contain_text(["Ann", "Bob"])
    # Bob types: Ann sees it, Bob does not see himself.
    bob.locator("#publish-text").press_sequentially("hel")
    expect(ann.locator("#typing")).to_have_text("Bob is typing…")
    expect(bob.locator("#typing")).to_have_text("")
    expect(ann.locator("#typing")).to_have_text("", timeout=8_000)  # cleared after 5 s
    # Ann reloads: Bob never sees her leave.
    bob.evaluate(
        """() => {
          window.__leaves = [];
          const stream = document.getElementById("stream");
          let before = new Set();
          stream.addEventListener("live:presence", (event) => {
            const now = new Set(event.detail.members.keys());
            for (const user of before) if (!now.has(user)) window.__leaves.push(user);
            before = now;
          });
        }"""
    )
    ann.reload()
    expect(ann.locator("#status")).to_have_text("live")
    expect(ann.locator("#presence-members li")).to_have_count(2)
    # A leave shows once the grace (1 s here) has passed: wait past it, then look for none.
    bob.wait_for_timeout(2_500)
    assert bob.evaluate("() => window.__leaves") == []
    expect(bob.locator("#presence-members li")).to_have_count(2)
    ann.close()
    expect(bob.locator("#presence-members li")).to_have_count(1, timeout=10_000)


def test_notify_reaches_the_users_bell_live_and_no_one_elses(site, new_page):
    ann = signed_in(new_page, site, "ann")
    bob = signed_in(new_page, site, "bob")
    expect(ann.locator("#bell-count")).to_have_text("0")
    manage(site.env, "notify", "ann", "--data", '{"text": "Your order shipped"}')
    expect(ann.locator("#bell-count")).to_have_text("1")
    ann.click("#bell-button")
    expect(ann.locator("#bell-list li").first.locator(".text")).to_have_text("Your order shipped")
    expect(ann.locator("#bell-count")).to_have_text("0")  # opened: read
    bob.wait_for_timeout(500)
    expect(bob.locator("#bell-count")).to_have_text("0")
    # The admin's action on users sends one too; it arrives live, and stays after a reload.
    boss = admin_page(new_page, site)
    boss.goto(site.url + "/admin/auth/user/")
    boss.locator("tr", has_text="bob").locator("input.action-select").check()
    boss.select_option("select[name=action]", "notify_users")
    boss.click("button[name=index]")
    boss.fill("#id_text", "Welcome, Bob")
    boss.click("input[type=submit][value=Send]")
    expect(boss.locator(".messagelist")).to_contain_text("Notification sent to 1 user(s).")
    expect(bob.locator("#bell-count")).to_have_text("1")
    bob.reload()
    expect(bob.locator("#bell-count")).to_have_text("1")
    bob.click("#bell-button")
    expect(bob.locator("#bell-list li").first.locator(".text")).to_have_text("Welcome, Bob")
    expect(ann.locator("#bell-list li")).to_have_count(1)  # never Bob's


def test_saving_a_service_in_the_admin_updates_the_board_and_its_page_live(site, new_page):
    board = new_page()
    live(board, site.url + "/status/")
    one = new_page()
    live(one, site.url + "/status/payments/")
    expect(board.locator("#payments-status .status")).to_have_text("Degraded performance")
    expect(one.locator("#service .status")).to_have_text("Degraded performance")
    admin = admin_page(new_page, site)
    admin.goto(site.url + "/admin/demo/service/")
    admin.get_by_role("link", name="Payments").click()
    admin.select_option("#id_status", "operational")
    admin.fill("#id_note", "Fixed: payments are fast again.")
    admin.click("input[name=_save]")
    expect(admin.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(board.locator("#payments-status .status")).to_have_text("Operational")
    expect(one.locator("#service .status")).to_have_text("Operational")
    expect(one.locator("#service .note")).to_have_text("Fixed: payments are fast again.")
    expect(board.locator("#website-status .status")).to_have_text("Operational")  # untouched
