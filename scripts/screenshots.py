"""Take the README's screenshots (1280x800, Debian's Chromium via Playwright) of a live site:
the home page, the chat with who is here and who is typing, the service status board, the
console, the admin's topic page and its "Realtime status" page.
Run: .venv/bin/python scripts/screenshots.py"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from realtime.embedded import EmbeddedRedis  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.helpers.processes import Site  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def signed_in(browser, site, username: str, path: str):
    """A page of its own browser context, signed in as ``username``, at ``path``."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{site.url}/accounts/login/?next={path}")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("button[type=submit], input[type=submit]")
    expect(page.locator("#status")).to_have_text("live")
    return page


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(directory=Path(tmp) / "redis") as redis,
    ):
        site = Site(Path(tmp), redis.url, REALTIME=json.dumps({"SCHEDULER_TICK": 0.5})).start()
        try:
            site.shell(
                "from django.contrib.auth.models import User\n"
                "User.objects.create_superuser('admin', 'a@example.com', 'admin-pass-123')\n"
                "User.objects.create_user('ann', password='ann-pass-123', first_name='Ann',"
                " last_name='Lee')\n"
                "User.objects.create_user('bob', password='bob-pass-123', first_name='Bob',"
                " last_name='Stone')\n"
            )
            site.publish(
                "news",
                json.dumps(
                    {
                        "title": "Release 1.0 is out",
                        "body": "Live regions, rendered messages, Server-Sent Events.",
                    }
                ),
            )
            for text in ("Hello!", "Anyone here?", "Yes, live from another tab."):
                site.publish("chat", json.dumps({"text": text}))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(site.url + "/")
                expect(page.locator("#status")).to_have_text("live")
                expect(page.locator('[data-topic="clock"] .latest time.clock')).to_have_count(1)
                page.screenshot(path=OUT / "home.png")
                ann, bob = (
                    signed_in(browser, site, name, "/topics/chat/") for name in ("ann", "bob")
                )
                expect(ann.locator("#stream li")).to_have_count(3)
                expect(ann.locator("#presence-members li")).to_have_count(2)
                site.shell(
                    "import realtime\nfrom django.contrib.auth.models import User\n"
                    "realtime.notify(User.objects.get(username='ann'), {'text': 'Welcome!'})\n"
                )
                expect(ann.locator("#bell-count")).to_have_text("1")
                bob.locator("#publish-text").press_sequentially("Hi Ann")
                expect(ann.locator("#typing")).to_have_text("Bob Stone is typing…")
                ann.screenshot(path=OUT / "topic.png")
                page.goto(site.url + "/status/")
                expect(page.locator("#payments-status .status")).to_have_text(
                    "Degraded performance"
                )
                page.wait_for_timeout(1600)  # the highlight of the first state has faded
                page.screenshot(path=OUT / "status-board.png")
                visitor = browser.new_page(viewport={"width": 1280, "height": 800})
                visitor.goto(site.url + "/topics/news/")  # someone watching news
                admin = browser.new_page(viewport={"width": 1280, "height": 800})
                admin.goto(site.url + "/admin/login/")
                admin.fill("#id_username", "admin")
                admin.fill("#id_password", "admin-pass-123")
                admin.click("input[type=submit]")
                admin.goto(site.url + "/admin/realtime/topic/")
                admin.get_by_role("link", name="news", exact=True).first.click()
                expect(admin.locator("#status")).to_have_text("live")
                expect(admin.locator("#subscriber-count")).not_to_have_text("0", timeout=10000)
                admin.screenshot(path=OUT / "admin-topic.png")
                admin.goto(site.url + "/admin/realtime/topic/status/")
                for i in range(12):  # a minute of activity for the sparklines
                    site.publish("chat", json.dumps({"text": f"message {i}"}))
                    admin.wait_for_timeout(500)
                expect(admin.locator("#spark-frames polyline")).to_have_count(1)
                admin.screenshot(path=OUT / "status.png")
                page.goto(site.url + "/console/")
                expect(page.locator("#console-state")).to_have_text("open")
                page.fill("#console-frame", '{"type": "subscribe", "topic": "news", "id": 1}')
                page.click("#console-send")
                page.fill("#console-frame", '{"type": "ping", "id": 2}')
                page.click("#console-send")
                expect(page.locator("#console-log li.in").first).to_contain_text("pong")
                page.screenshot(path=OUT / "console.png")
                browser.close()
        finally:
            site.stop()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
