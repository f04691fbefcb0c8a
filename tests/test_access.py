"""Access that ends while a socket is open (realtime.access), against real daphne processes:
an ended session closes the user's sockets with 4401, on every process, within a second; a
topic's read access ending unsubscribes that topic and keeps the socket."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.helpers.browserless import Browserless
from tests.helpers.processes import start_daphne

pytestmark = pytest.mark.e2e

REVOKED_WITHIN = 1.0  # seconds: the promise (docs/PROTOCOL.md)
MAKE_USERS = (
    "from django.contrib.auth.models import Group, User\n"
    "members = Group.objects.get(name='members')\n"
    "ann = User.objects.create_user('ann', password='ann-pass-123')\n"
    "ann.groups.add(members)\n"
    "User.objects.create_user('boss', password='boss-pass-123', is_staff=True)\n"
)


@pytest.fixture
def site(live_site):
    running = live_site(scheduler=False)
    running.shell(MAKE_USERS)
    return running


async def open_member_socket(site, browser: Browserless, topics=("staff-room",)):
    ws = await browser.socket(site.ws_url)
    welcome = json.loads(await ws.recv())
    assert welcome["user"] == "ann"
    for slug in topics:
        await ws.send(json.dumps({"type": "subscribe", "topic": slug}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


async def next_control_frame(ws, timeout: float = REVOKED_WITHIN) -> dict:
    """The next frame that is not a topic message (the backlog may come first)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] != "message":
                return frame


async def closed_with(ws, timeout: float = REVOKED_WITHIN) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def signed_in(site) -> Browserless:
    browser = Browserless(site.url)
    await asyncio.to_thread(browser.login, "ann", "ann-pass-123")
    return browser


async def test_logout_closes_open_sockets_4401(site):
    browser = await signed_in(site)
    ws = await open_member_socket(site, browser)
    other_tab = await open_member_socket(site, browser, topics=())
    await asyncio.to_thread(browser.logout)
    assert await closed_with(ws) == 4401
    assert await closed_with(other_tab) == 4401


@pytest.mark.parametrize(
    "change",
    [
        "u.set_password('new-pass-456'); u.save()",
        "u.is_active = False; u.save()",
        "from django.contrib.sessions.models import Session; Session.objects.all().delete()",
        "u.delete()",
    ],
    ids=["password-changed", "deactivated", "session-deleted", "user-deleted"],
)
async def test_ended_session_closes_sockets_4401(site, change):
    browser = await signed_in(site)
    ws = await open_member_socket(site, browser)
    user = "from django.contrib.auth.models import User; u = User.objects.get(username='ann')"
    await asyncio.to_thread(site.shell, f"{user}; {change}")
    assert await closed_with(ws) == 4401


async def test_other_users_and_sessions_keep_their_sockets(site):
    browser = await signed_in(site)
    ws = await open_member_socket(site, browser)
    second = Browserless(site.url)
    await asyncio.to_thread(second.login, "ann", "ann-pass-123")  # another browser, same user
    other = await open_member_socket(site, second)
    await asyncio.to_thread(browser.logout)
    assert await closed_with(ws) == 4401
    await other.send(json.dumps({"type": "ping", "id": 1}))
    assert json.loads(await asyncio.wait_for(other.recv(), 5)) == {"type": "pong", "id": 1}
    await other.close()


async def test_revocation_reaches_sockets_on_another_process(site, tmp_path):
    second, port = start_daphne(site.env, tmp_path / "daphne-b.log")
    try:
        browser = await signed_in(site)
        ws = await browser.socket(f"ws://127.0.0.1:{port}/ws/")
        assert json.loads(await ws.recv())["user"] == "ann"
        await asyncio.to_thread(browser.logout)  # served by the first process
        assert await closed_with(ws) == 4401
    finally:
        second.stop()


async def test_login_as_another_user_does_not_carry_the_socket_over(site):
    browser = await signed_in(site)
    old_key = browser.cookie("sessionid")
    ws = await open_member_socket(site, browser)
    new_key = await asyncio.to_thread(browser.login, "boss", "boss-pass-123")
    assert new_key != old_key
    assert await closed_with(ws) == 4401  # reconnecting gives the new rights, not this socket


async def test_removed_from_group_unsubscribes_the_topic_and_keeps_the_socket(site):
    browser = await signed_in(site)
    ws = await open_member_socket(site, browser, topics=("staff-room", "news"))
    await asyncio.to_thread(
        site.shell,
        "from django.contrib.auth.models import Group, User\n"
        "User.objects.get(username='ann').groups.remove(Group.objects.get(name='members'))",
    )
    frame = await next_control_frame(ws)
    assert frame == {"type": "unsubscribed", "topic": "staff-room", "code": "forbidden"}
    await asyncio.to_thread(site.publish, "staff-room", '"secret"')
    public = await asyncio.to_thread(site.publish, "news", '"public"')
    seen = []
    async with asyncio.timeout(10):
        while not seen or seen[-1] != ("news", public):
            frame = json.loads(await ws.recv())
            seen.append((frame.get("topic"), frame.get("seq")))
    assert all(topic == "news" for topic, _ in seen)  # never the private one
    await ws.close()


@pytest.mark.parametrize(
    "change, code",
    [("t.private = True; t.save()", "forbidden"), ("t.enabled = False; t.save()", "not_found")],
)
async def test_topic_made_private_or_disabled_unsubscribes_anonymous_readers(site, change, code):
    from websockets.asyncio.client import connect

    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": "news"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await asyncio.to_thread(
            site.shell,
            f"from realtime.models import Topic; t = Topic.objects.get(slug='news'); {change}",
        )
        frame = await next_control_frame(ws)
        assert frame == {"type": "unsubscribed", "topic": "news", "code": code}
