"""``realtime.members.Roster``: presence over several hubs through a real Redis (the hubs are
stand-ins: an id, the URL and a prefix)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis

from realtime import keys, members

TOPIC = "orders:1"


class FakeHub:
    def __init__(self, url: str, prefix: str):
        self.id = uuid.uuid4().hex[:8]
        self.url, self.prefix = url, prefix
        self.roster = members.Roster(self)


class Listener:
    def __init__(self):
        self.frames: list[dict] = []

    def notice(self, kind: str, text: str) -> None:
        self.frames.append(json.loads(text))


def member(user: int, name: str) -> dict:
    return {"user": user, "name": name, "info": {}}


@pytest.fixture
async def hubs(redis_url):
    prefix = f"roster-{uuid.uuid4().hex[:6]}"
    made = [FakeHub(redis_url, prefix) for _ in range(2)]
    yield made
    for hub in made:
        await hub.roster.close()


async def settle(*hubs: FakeHub) -> None:
    for hub in hubs:
        await hub.roster.flushed()


async def until(condition, timeout: float = 3.0) -> None:
    """Wait (polling) until ``condition()`` holds; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def listening(hub: FakeHub) -> Listener:
    """A listener on TOPIC that has its first roster."""
    listener = Listener()
    await hub.roster.listen(TOPIC, listener)
    await until(lambda: listener.frames)
    return listener


async def test_one_member_per_user_across_hubs_and_every_connection_counted(hubs):
    a, b = hubs
    a.roster.track(TOPIC, object(), member(1, "Ann"))
    b.roster.track(TOPIC, object(), member(1, "Ann"))  # another tab, another process
    b.roster.track(TOPIC, object(), member(2, "Bob"))
    b.roster.track(TOPIC, object(), None)  # anonymous: counted, not listed
    await settle(a, b)
    listener = await listening(a)
    (frame,) = listener.frames
    assert frame["type"] == "presence" and frame["count"] == 4
    assert sorted(m["name"] for m in frame["members"]) == ["Ann", "Bob"]


async def test_a_leave_waits_for_the_grace_and_a_return_within_it_shows_nothing(hubs, settings):
    settings.REALTIME = {"PRESENCE_GRACE": 5}
    a, b = hubs
    listener = await listening(a)
    tab = object()
    b.roster.track(TOPIC, tab, member(2, "Bob"))
    await settle(b)
    a.roster.changed(TOPIC)
    await until(lambda: len(listener.frames) == 2)
    assert listener.frames[-1]["joins"] == [member(2, "Bob")]
    b.roster.drop(TOPIC, tab)  # a reload: gone, and back within the grace
    b.roster.track(TOPIC, object(), member(2, "Bob"))
    await settle(b)
    a.roster.changed(TOPIC)
    await asyncio.sleep(members.BATCH * 3)  # a leave would have been sent by now
    assert all(not f.get("leaves") for f in listener.frames)
    # Gone for good: listed until the grace ends, then a leave.
    b.roster.drop(TOPIC, next(iter(b.roster.tracked[TOPIC])))
    await settle(b)
    assert b.roster.entry(TOPIC)["m"] == [member(2, "Bob")] and b.roster.entry(TOPIC)["c"] == 0
    await b.roster.beat(time.monotonic() + 6)
    await settle(b)
    a.roster.changed(TOPIC)
    await until(lambda: listener.frames[-1].get("leaves"))
    assert listener.frames[-1]["leaves"] == [member(2, "Bob")]
    assert listener.frames[-1]["count"] == 0


async def test_a_dead_hubs_members_leave_and_its_field_is_removed(hubs, redis_url):
    a, b = hubs
    listener = await listening(a)
    b.roster.track(TOPIC, object(), member(3, "Cy"))
    await settle(b)
    await a.roster.refresh_all()
    assert listener.frames[-1]["joins"] == [member(3, "Cy")]
    client = redis.Redis.from_url(redis_url)
    client.zadd(keys.hubs_alive_key(b.prefix), {b.id: time.time() - members.ALIVE - 1})
    await a.roster.refresh_all()
    assert listener.frames[-1]["leaves"] == [member(3, "Cy")]
    assert client.hkeys(keys.roster_key(b.prefix, TOPIC)) == []


async def test_a_crowd_lists_the_first_hundred_and_counts_everyone(hubs):
    a, b = hubs
    for user in range(150):
        b.roster.track(TOPIC, object(), member(user, f"user {user}"))
    await settle(b)
    listener = await listening(a)
    (frame,) = listener.frames
    assert len(frame["members"]) == members.MAX_MEMBERS and frame["count"] == 150
    assert [m["user"] for m in frame["members"]] == list(range(100))


def test_member_of_uses_the_full_name_and_the_info_hook(settings, db):
    from django.contrib.auth.models import AnonymousUser, User

    ann = User.objects.create_user("ann", first_name="Ann", last_name="Lee")
    assert members.member_of(ann) == {"user": ann.pk, "name": "Ann Lee", "info": {}}
    assert members.member_of(AnonymousUser()) is None
    settings.REALTIME = {"PRESENCE_INFO": "tests.test_members.avatar"}
    assert members.member_of(ann)["info"] == {"avatar": "/a/ann.png"}
    settings.REALTIME = {"PRESENCE_INFO": "tests.test_members.broken"}
    assert members.member_of(ann)["info"] == {}  # logged, shown without info


def avatar(user) -> dict:
    return {"avatar": f"/a/{user.username}.png"}


def broken(user) -> dict:
    raise RuntimeError("no avatar service")


async def test_a_crowd_joining_shares_roster_reads_and_diffs(hubs):
    a, b = hubs
    listeners = []
    for user in range(50):  # fifty tabs subscribe with presence in the same moment
        a.roster.track(TOPIC, object(), member(user, f"user {user}"))
        listener = Listener()
        listeners.append(listener)
        await a.roster.listen(TOPIC, listener)
    await until(lambda: all(listener.frames for listener in listeners))
    assert all(len(listener.frames) == 1 for listener in listeners)  # one roster each
    assert {listener.frames[0]["count"] for listener in listeners} == {50}
    assert a.roster.frames == 50  # no diff per join


async def test_a_roster_lost_with_redis_is_written_again(hubs, redis_url):
    a, b = hubs
    b.roster.track(TOPIC, object(), member(4, "Di"))
    await settle(b)
    redis.Redis.from_url(redis_url).delete(keys.roster_key(b.prefix, TOPIC))  # Redis wiped
    listener = await listening(a)
    assert listener.frames[-1]["members"] == []
    b.roster.rewrite()  # what the hub does when its subscription comes back
    await settle(b)
    await a.roster.refresh_all()
    assert listener.frames[-1]["joins"] == [member(4, "Di")]
