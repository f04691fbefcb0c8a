"""Topics per object and per user (protocol, third edition), against real daphne processes:
``family:key`` topics on demand, ``user:<id>`` and ``notify``, rules asked again on
``access_changed``, presence with names across processes, whispers, model broadcasting and
the per-topic Redis subscriptions."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.browserless import Browserless
from tests.helpers.processes import manage, start_daphne

pytestmark = pytest.mark.e2e

MAKE_USERS = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('ann', password='ann-pass-123', first_name='Ann',"
    " last_name='Lee')\n"
    "User.objects.create_user('bob', password='bob-pass-123')\n"
    "User.objects.create_user('boss', password='boss-pass-123', is_staff=True)\n"
)
NEW_ORDER = (
    "from django.contrib.auth.models import User\n"
    "from demo.models import Order\n"
    "print(Order.objects.create(owner=User.objects.get(username='ann'), item='tea').pk)\n"
)


def start_site(start) -> object:
    """A site with PRESENCE_GRACE 1.5 s and the users ann (Ann Lee), bob and boss (staff)."""
    running = start(scheduler=False, realtime={"PRESENCE_GRACE": 1.5})
    running.shell(MAKE_USERS)
    return running


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory, redis_url):
    """One site for the module (each test uses topics of its own): a site costs seconds."""
    from tests.helpers.processes import Site

    def start(**options):
        realtime = options.pop("realtime")
        made = Site(tmp_path_factory.mktemp("families"), redis_url, REALTIME=json.dumps(realtime))
        return made.start(**options)

    running = start_site(start)
    yield running
    running.stop()


@pytest.fixture
def site(shared_site):
    return shared_site


@pytest.fixture
def order(site) -> int:
    """A new order of ann's: ``orders:<pk>`` is a topic of this test's own."""
    return int(site.shell(NEW_ORDER).split()[-1])


async def signed_in(site, username: str):
    browser = Browserless(site.url)
    await asyncio.to_thread(browser.login, username, f"{username}-pass-123")
    ws = await browser.socket(site.ws_url)
    ws.welcome = json.loads(await ws.recv())
    assert ws.welcome["user"] == username
    return ws


async def anonymous(site, url: str | None = None):
    url = url or site.ws_url
    ws = await connect(
        url, subprotocols=["realtime.v1"], origin=url.split("/ws/")[0].replace("ws", "http", 1)
    )
    ws.welcome = json.loads(await ws.recv())
    return ws


async def frame_of(ws, kind: str, timeout: float = 10.0, **match) -> dict:
    """The next frame of type ``kind`` (and these fields); frames before it are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def request(ws, frame: dict) -> dict:
    """Send ``frame`` with an id; the answer with that id."""
    frame = {**frame, "id": f"r{id(frame)}"}
    await ws.send(json.dumps(frame))
    async with asyncio.timeout(10):
        while True:
            answer = json.loads(await ws.recv())
            if answer.get("id") == frame["id"]:
                return answer


def topic_rows(site, prefix: str) -> int:
    code = (
        "from realtime.models import Topic\n"
        f"print(Topic.objects.filter(slug__startswith={prefix!r}).count())"
    )
    return int(site.shell(code).split()[-1])


async def test_a_family_topic_exists_on_demand_and_its_first_publish_makes_it(site):
    ws = await anonymous(site)
    answer = await request(ws, {"type": "subscribe", "topic": "services:new-one"})
    assert answer["type"] == "subscribed" and answer["seq"] == 0
    assert topic_rows(site, "services:new-one") == 0  # a subscribe stores nothing
    site.shell("import realtime; realtime.publish('services:new-one', {'up': True})")
    message = await frame_of(ws, "message", topic="services:new-one")
    assert message["seq"] == 1 and message["data"] == {"up": True}
    site.shell("import realtime; realtime.publish('services:new-one', {'up': False})")
    assert (await frame_of(ws, "message", topic="services:new-one"))["seq"] == 2
    assert topic_rows(site, "services:new-one") == 1
    await ws.close()
    # A client resuming from seq 1 gets seq 2, once.
    again = await anonymous(site)
    answer = await request(again, {"type": "subscribe", "topic": "services:new-one", "since": 1})
    assert answer["recovered"] is True and answer["seq"] == 2
    assert (await frame_of(again, "message"))["seq"] == 2
    await again.close()


async def test_concurrent_first_publishes_make_one_row_and_gap_free_seqs(site):
    code = (
        "import realtime, threading\n"
        "from django.db import connection\n"
        "def go():\n"
        "    realtime.publish('services:race', {'n': 1}); connection.close()\n"
        "ts = [threading.Thread(target=go) for _ in range(6)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "from realtime.models import Topic, Message\n"
        "t = Topic.objects.get(slug='services:race')\n"
        "print(Topic.objects.filter(slug='services:race').count(), t.last_seq,"
        " sorted(Message.objects.filter(topic=t).values_list('seq', flat=True)))\n"
    )
    out = site.shell(code).strip().splitlines()[-1]
    assert out == "1 6 [1, 2, 3, 4, 5, 6]"


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("orders:", "bad_request"),
        ("orders:a b", "bad_request"),
        ("Orders:1", "bad_request"),
        ("orders:" + "9" * 101, "bad_request"),
        ("orders:1:2", "bad_request"),
        ("no-such-family:1", "not_found"),
        ("orders:999999", "not_found"),  # exists or not: this visitor may not read it
    ],
)
async def test_bad_family_names_and_unreadable_keys_store_nothing(site, topic, code):
    ws = await anonymous(site)
    answer = await request(ws, {"type": "subscribe", "topic": topic})
    assert answer["type"] == "error" and answer["code"] == code
    answer = await request(ws, {"type": "publish", "topic": topic, "data": 1})
    assert answer["type"] == "error" and answer["code"] in (code, "forbidden")
    assert (await request(ws, {"type": "ping"}))["type"] == "pong"  # still open
    assert topic_rows(site, topic.split(":")[0] + ":") == 0
    await ws.close()


async def test_an_anonymous_visitor_cycling_keys_makes_no_rows_and_no_lasting_redis_state(site):
    ws = await anonymous(site)
    client = redis.Redis.from_url(site.redis_url)
    for n in range(20):  # keys it may not read: refused before anything reaches Redis
        answer = await request(ws, {"type": "subscribe", "topic": f"orders:{n}"})
        assert answer["code"] == "not_found"
        assert client.pubsub_channels(f"{site.prefix}:rt:topic:orders:*") == []
    for n in range(30):  # within the frame budget (FRAME_BURST)
        topic = f"services:k{n}"
        assert (await request(ws, {"type": "subscribe", "topic": topic}))["type"] == "subscribed"
        assert (await request(ws, {"type": "unsubscribe", "topic": topic}))["type"] == (
            "unsubscribed"
        )
    assert (await request(ws, {"type": "publish", "topic": "services:k1", "data": 1}))[
        "code"
    ] == "forbidden"
    assert topic_rows(site, "services:k") == 0  # the keys it tried made nothing
    # Topics only tried are dropped from Redis at the next batch (within about a second).
    for _ in range(50):
        held = client.pubsub_channels(f"{site.prefix}:rt:topic:services:k*")
        if not held:
            break
        await asyncio.sleep(0.1)
    assert held == []
    await ws.close()


async def test_user_topic_is_read_by_its_user_only_and_notify_reaches_it_live(site):
    ann = await signed_in(site, "ann")
    bob = await signed_in(site, "bob")
    own = ann.welcome["user_topic"]
    assert own and own.startswith("user:") and own != bob.welcome["user_topic"]
    assert (await request(ann, {"type": "subscribe", "topic": own}))["type"] == "subscribed"
    refused = await request(bob, {"type": "subscribe", "topic": own})
    assert refused["type"] == "error" and refused["code"] == "not_found"
    anon = await anonymous(site)
    assert anon.welcome["user_topic"] is None
    assert (await request(anon, {"type": "subscribe", "topic": own}))["code"] == "not_found"
    # Visitors may not publish to anyone's topic, not even their own.
    assert (await request(ann, {"type": "publish", "topic": own, "data": 1}))["code"] == (
        "forbidden"
    )
    out = manage(site.env, "notify", "ann", "--data", '{"text": "Your order shipped"}').stdout
    assert out.split()[0] == own
    message = await frame_of(ann, "message", topic=own)
    assert message["data"] == {"text": "Your order shipped"}
    bob_own = bob.welcome["user_topic"]
    assert (await request(bob, {"type": "subscribe", "topic": bob_own}))["seq"] == 0
    for ws in (ann, bob, anon):
        await ws.close()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nobody", "--data", "{}"], "No user 'nobody'"),
        (["ann", "--data", "{not json"], "not valid JSON"),
        (["ann", "--data", "NaN"], "not valid JSON"),
        (["ann"], "--data"),
    ],
)
def test_notify_command_refuses_what_it_cannot_do(site, args, error):
    before = topic_rows(site, "user:")
    result = manage(site.env, "notify", *args, check=False)
    assert result.returncode != 0 and error in result.stderr
    assert topic_rows(site, "user:") == before


async def test_a_reader_who_loses_access_gets_unsubscribed_and_keeps_the_socket(site, order):
    ann = await signed_in(site, "ann")
    topic = f"orders:{order}"
    assert (await request(ann, {"type": "subscribe", "topic": topic}))["type"] == "subscribed"
    bob_pk = site.shell(
        "from django.contrib.auth.models import User\n"
        "from demo.models import Order\n"
        f"o = Order.objects.get(pk={order}); o.owner = User.objects.get(username='bob')\n"
        "o.save(); print(o.owner_id)\n"
    ).split()[-1]
    assert bob_pk.isdigit()
    gone = await frame_of(ann, "unsubscribed", topic=topic)
    assert gone["code"] in ("forbidden", "not_found")
    assert (await request(ann, {"type": "subscribe", "topic": topic}))["code"] == "not_found"
    assert (await request(ann, {"type": "ping"}))["type"] == "pong"
    await ann.close()


async def test_presence_lists_members_by_name_once_counts_everyone_and_survives_a_reload(
    site, order
):
    topic = f"orders:{order}"
    ann = await signed_in(site, "ann")
    assert (await request(ann, {"type": "subscribe", "topic": topic, "presence": True}))[
        "type"
    ] == "subscribed"
    first = await frame_of(ann, "presence", topic=topic)
    assert [m["name"] for m in first["members"]] == ["Ann Lee"] and first["count"] == 1
    assert first["members"][0]["info"] == {}
    boss = await signed_in(site, "boss")
    await request(boss, {"type": "subscribe", "topic": topic, "presence": True})
    roster = await frame_of(boss, "presence", topic=topic)
    assert sorted(m["name"] for m in roster["members"]) == ["Ann Lee", "boss"]
    joined = await frame_of(ann, "presence_diff", topic=topic)
    assert [m["name"] for m in joined["joins"]] == ["boss"] and joined["count"] == 2
    # A second tab of ann's: counted, not listed twice.
    tab = await signed_in(site, "ann")
    await request(tab, {"type": "subscribe", "topic": topic, "presence": True})
    roster = await frame_of(tab, "presence", topic=topic)
    assert sorted(m["name"] for m in roster["members"]) == ["Ann Lee", "boss"]
    assert roster["count"] == 3
    diff = await frame_of(boss, "presence_diff", topic=topic)
    assert diff["joins"] == [] and diff["leaves"] == [] and diff["count"] == 3
    # boss reloads (closes and opens within the grace): no leave, no join.
    await boss.close()
    boss = await signed_in(site, "boss")
    await request(boss, {"type": "subscribe", "topic": topic, "presence": True})
    await frame_of(boss, "presence", topic=topic)
    seen = []
    try:
        async with asyncio.timeout(2.5):
            while True:
                frame = json.loads(await ann.recv())
                if frame["type"] == "presence_diff":
                    seen.append(frame)
    except TimeoutError:
        pass
    assert all(not f["joins"] and not f["leaves"] for f in seen), seen
    # boss goes: ann sees the leave once the grace has passed.
    await boss.close()
    left = await frame_of(ann, "presence_diff", timeout=6, count=2)
    while not left["leaves"]:
        left = await frame_of(ann, "presence_diff", timeout=6)
    assert [m["name"] for m in left["leaves"]] == ["boss"]
    for ws in (ann, tab):
        await ws.close()


async def test_presence_is_forbidden_where_the_rules_do_not_allow_it_and_the_subscribe_stays(
    site,
):
    ws = await anonymous(site)
    await ws.send(json.dumps({"type": "subscribe", "topic": "news", "presence": True, "id": 1}))
    assert (await frame_of(ws, "subscribed"))["topic"] == "news"
    refused = await frame_of(ws, "error")
    assert refused["code"] == "forbidden" and refused["topic"] == "news" and refused["id"] == 1
    answer = await request(ws, {"type": "subscribe", "topic": "news", "presence": "yes"})
    assert answer["code"] == "bad_request"
    await ws.close()


async def test_whispers_reach_the_others_not_the_sender_and_are_limited(site, order):
    topic = f"orders:{order}"
    ann = await signed_in(site, "ann")
    boss = await signed_in(site, "boss")
    for ws in (ann, boss):
        assert (await request(ws, {"type": "subscribe", "topic": topic}))["type"] == "subscribed"
    await ann.send(json.dumps({"type": "whisper", "topic": topic, "data": {"typing": True}}))
    heard = await frame_of(boss, "whisper", topic=topic)
    assert heard["data"] == {"typing": True}
    assert heard["from"] == {"user": ann.welcome and heard["from"]["user"], "name": "Ann Lee"}
    assert "seq" not in heard
    # Never to the sender: its next frame is the answer to a ping.
    assert (await request(ann, {"type": "ping"}))["type"] == "pong"
    too_big = await request(ann, {"type": "whisper", "topic": topic, "data": "x" * 5000})
    assert too_big["code"] == "bad_request"
    anon = await anonymous(site)
    refused = await request(anon, {"type": "whisper", "topic": "news", "data": 1})
    assert refused["code"] == "forbidden"  # readable, whispers off
    refused = await request(anon, {"type": "whisper", "topic": topic, "data": 1})
    assert refused["code"] == "not_found"  # not theirs
    # A flood: rate_limited, then 1008.
    codes = []
    with pytest.raises(ConnectionClosed):
        for _ in range(200):
            await ann.send(json.dumps({"type": "whisper", "topic": topic, "data": 1}))
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await ann.recv())
                if frame["type"] == "error":
                    codes.append(frame["code"])
    assert "rate_limited" in codes and ann.close_code == 1008
    for ws in (boss, anon):
        await ws.close()


async def ann_and_boss_across_processes(site, topic: str, port: int):
    """ann on the site's process and boss on the one at ``port``, both on ``topic`` with
    presence: each sees the other by name, and boss's whisper reaches ann. (ann, boss)."""
    ann = await signed_in(site, "ann")
    browser = Browserless(f"http://127.0.0.1:{port}")
    await asyncio.to_thread(browser.login, "boss", "boss-pass-123")
    boss = await browser.socket(f"ws://127.0.0.1:{port}/ws/")
    await boss.recv()
    await request(ann, {"type": "subscribe", "topic": topic, "presence": True})
    await frame_of(ann, "presence")
    await request(boss, {"type": "subscribe", "topic": topic, "presence": True})
    roster = await frame_of(boss, "presence")
    assert sorted(m["name"] for m in roster["members"]) == ["Ann Lee", "boss"]
    joined = await frame_of(ann, "presence_diff")
    assert [m["name"] for m in joined["joins"]] == ["boss"]
    await boss.send(json.dumps({"type": "whisper", "topic": topic, "data": "hi"}))
    assert (await frame_of(ann, "whisper"))["data"] == "hi"
    return ann, boss


async def test_presence_and_whispers_reach_connections_on_another_process(site, order, tmp_path):
    other, port = start_daphne(site.env, tmp_path / "second.log")
    try:
        ann, _ = await ann_and_boss_across_processes(site, f"orders:{order}", port)
        # The other process is killed: its member leaves within the grace and a few seconds.
        os.killpg(other.popen.pid, signal.SIGKILL)
        left = await frame_of(ann, "presence_diff", timeout=12)
        while not left["leaves"]:
            left = await frame_of(ann, "presence_diff", timeout=12)
        assert [m["name"] for m in left["leaves"]] == ["boss"] and left["count"] == 1
        await ann.close()
    finally:
        other.stop()


async def test_each_process_reads_only_the_topics_its_connections_hold(live_site, tmp_path):
    site = start_site(live_site)  # a first process that has read nothing yet
    other, port = start_daphne(site.env, tmp_path / "second.log")
    try:
        here = await anonymous(site)
        there = await anonymous(site, f"ws://127.0.0.1:{port}/ws/")
        await request(here, {"type": "subscribe", "topic": "services:here"})
        await request(there, {"type": "subscribe", "topic": "services:there"})
        site.shell(
            "import realtime\n"
            "for n in range(20): realtime.publish('services:there', {'n': n})\n"
            "realtime.publish('services:here', {'n': 0})\n"
        )
        assert (await frame_of(here, "message"))["topic"] == "services:here"
        for n in range(20):
            assert (await frame_of(there, "message"))["seq"] == n + 1
        client = redis.Redis.from_url(site.redis_url)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            stats = [
                {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
                for key in client.scan_iter(f"{site.prefix}:rt:hubstats:*")
            ]
            reads = sorted(int(s.get("read", 0)) for s in stats)
            if reads == [1, 20] or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.3)
        assert reads == [1, 20]  # each hub read its own topic's messages, not the other's
        await here.close()
        await there.close()
    finally:
        other.stop()


async def test_saving_a_broadcast_model_sends_its_rendering_to_its_topic(site):
    ws = await anonymous(site)
    answer = await request(ws, {"type": "subscribe", "topic": "services:api", "since": 1})
    assert answer["type"] == "subscribed" and answer["seq"] == 1  # seeded: its first state
    site.shell(
        "from demo.models import Service\n"
        "s = Service.objects.get(slug='api'); s.status = 'outage'; s.note = 'Down <b>'; s.save()\n"
    )
    message = await frame_of(ws, "message", topic="services:api")
    assert message["data"]["object"]["status"] == "outage" and message["data"]["deleted"] is False
    assert 'data-status="outage"' in message["html"] and "Down &lt;b&gt;" in message["html"]
    site.shell("from demo.models import Service; Service.objects.get(slug='api').delete()")
    gone = await frame_of(ws, "message", topic="services:api")
    assert gone["data"]["deleted"] is True and "removed" in gone["html"]
    await ws.close()


async def test_an_event_stream_sends_presence_with_presence_1(site):
    import urllib.request

    topic = "chat"
    ws = await anonymous(site)
    await request(ws, {"type": "subscribe", "topic": topic, "presence": True})
    await frame_of(ws, "presence")

    def read_events() -> list[str]:
        url = f"{site.url}/events/?topic={topic}&presence=1"
        found = []
        with urllib.request.urlopen(url, timeout=10) as response:
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    found.append(line.split(":", 1)[1].strip())
                if line.startswith("data:") and '"type":"presence"' in line:
                    found.append(json.loads(line[5:])["count"])
                    return found
        return found

    events = await asyncio.to_thread(read_events)
    assert "presence" in events and events[-1] == 2
    await ws.close()


async def test_under_plain_daphne_family_topics_presence_and_whispers_work(live_site):
    plain = start_site(lambda **o: live_site(plain=True, **o))  # daphne project.asgi:app…
    topic = f"orders:{int(plain.shell(NEW_ORDER).split()[-1])}"
    ann = await signed_in(plain, "ann")
    boss = await signed_in(plain, "boss")
    for ws in (ann, boss):
        await request(ws, {"type": "subscribe", "topic": topic, "presence": True})
    roster = await frame_of(boss, "presence")
    assert sorted(m["name"] for m in roster["members"]) == ["Ann Lee", "boss"]
    await boss.send(json.dumps({"type": "whisper", "topic": topic, "data": "hi"}))
    assert (await frame_of(ann, "whisper"))["data"] == "hi"
    plain.shell(f"import realtime; realtime.publish({topic!r}, {{'status': 'shipped'}})")
    assert (await frame_of(ann, "message", topic=topic))["seq"] == 1
    for ws in (ann, boss):
        await ws.close()
