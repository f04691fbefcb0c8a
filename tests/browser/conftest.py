"""Browser tests: Playwright driving Debian's Chromium against live daphne + scheduler."""

from __future__ import annotations

import os

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def live(page, url):
    """Open ``url`` and wait until its connection is live."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#status")).to_have_text("live")


@pytest.fixture(scope="module")
def browser():
    """Chromium for one module: Playwright's sync API holds an event loop while it runs, so it
    must stop before the async tests of other modules start."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"No Chromium at {CHROMIUM}: scripts/test installs Debian's chromium.")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def site(live_site):
    return live_site(realtime={"SCHEDULER_TICK": 0.2})


@pytest.fixture
def new_page(browser):
    """Pages in fresh browser contexts (no shared cookies); closed at the end."""
    contexts = []

    def make(viewport=None):
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()
