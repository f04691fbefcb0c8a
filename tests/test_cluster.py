"""Redis Cluster: sharded pub/sub (SPUBLISH / SSUBSCRIBE) on a real cluster of three masters
and three replicas (Debian's redis-server), with two workers and the scheduler on it."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from redis.crc import key_slot

from realtime import cluster, keys
from realtime.embedded_cluster import EmbeddedCluster
from tests.helpers.client import ResumingClient
from tests.helpers.processes import PYTHON, Proc, Site

pytestmark = pytest.mark.e2e

FAST = {"SCHEDULER_TICK": 0.2, "OUTBOX_GRACE": 0.3, "SCHEDULER_LOCK_TTL": 2.0}
PUBLISHER = (
    "import sys, time; from realtime import publish\n"
    "topics = {topics!r}\n"
    "for i in range({count}):\n"
    "    m = publish(topics[i % len(topics)], {{'i': i}})\n"
    "    print(m.topic.slug, m.seq, flush=True)\n"
    "    time.sleep({pause})\n"
)
MAKE_TOPICS = (
    "from realtime.models import Topic\n"
    "for slug in {slugs!r}:\n"
    "    Topic.objects.get_or_create(slug=slug, defaults={{'title': slug}})\n"
)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    found = EmbeddedCluster(directory=tmp_path_factory.mktemp("cluster")).start()
    yield found
    found.stop()


def masters_by_slot(url: str) -> cluster.SlotMap:
    """The cluster's slot map now (read in a thread of its own: tests may run in a loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, cluster.SlotMap.read(cluster.seeds(url))).result()


def topics_on_every_master(prefix: str, slots: cluster.SlotMap) -> dict[tuple[str, int], str]:
    """One topic slug per master: its channel's slot is that master's."""
    chosen: dict[tuple[str, int], str] = {}
    for i in range(1000):
        slug = f"shard-{i}"
        owner = slots.owner(keys.topic_channel(prefix, slug).encode())
        chosen.setdefault(owner, slug)
        if len(chosen) == len(slots.masters()):
            return chosen
    raise AssertionError("no topics found for every master")


def start_publisher(site: Site, topics: list[str], count: int, pause: float) -> Proc:
    code = PUBLISHER.format(topics=topics, count=count, pause=pause)
    return Proc(
        [PYTHON, "manage.py", "shell", "-c", code],
        site.env,
        site.tmp_path / f"publisher-{uuid.uuid4().hex[:6]}.log",
    )


async def subscribers(site: Site, n: int, topics: list[str]) -> list[ResumingClient]:
    started = [ResumingClient(f"ws://127.0.0.1:{site.port}/ws/", topics).start() for _ in range(n)]
    for c in started:
        await asyncio.wait_for(c.subscribed.wait(), 30)
    return started


def test_cluster_urls_parse_and_bad_ones_say_why():
    assert cluster.seeds("redis+cluster://a:7000,b:7001/0") == [("a", 7000), ("b", 7001)]
    assert cluster.seeds("redis+cluster://a:7000") == [("a", 7000)]
    for bad, why in [
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+cluster://a/0", "not host:port"),
        ("redis+cluster://a:7000,,b:1/0", "not host:port"),
        ("redis+cluster://a:x/0", "not host:port"),
        ("redis://a:7000/0", r"not a redis\+cluster"),
    ]:
        with pytest.raises(ValueError, match=why):
            cluster.seeds(bad)


def test_a_slot_map_names_the_owner_of_every_channel(redis_cluster):
    slots = masters_by_slot(redis_cluster.url)
    assert len(slots.masters()) == 3
    owners = {slots.owner(f"x:{i}".encode()) for i in range(200)}
    assert owners == slots.masters()
    for channel in (b"a", b"{tag}b", b"x:rt:topic:chat"):
        start, end, node = next(r for r in slots.ranges if r[0] <= key_slot(channel) <= r[1])
        assert slots.owner(channel) == node


async def test_two_workers_and_the_scheduler_deliver_over_every_master(live_site, redis_cluster):
    site = live_site(redis=redis_cluster.url, realtime=FAST, workers=2)
    slots = masters_by_slot(redis_cluster.url)
    chosen = topics_on_every_master(site.prefix, slots)
    topics = sorted(chosen.values())
    site.shell(MAKE_TOPICS.format(slugs=topics))
    clients = await subscribers(site, 20, topics)
    publisher = start_publisher(site, topics, 30, 0.01)
    await asyncio.to_thread(publisher.popen.wait, 60)
    assert publisher.popen.returncode == 0, publisher.output()
    for c in clients:
        for topic in topics:
            await c.wait_for(topic, 10, timeout=30)
            assert c.raw[topic] == list(range(1, 11))
    for c in clients:
        await c.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of this test's own (a master gets killed), stopped after the site."""
    found = EmbeddedCluster(directory=tmp_path / "cluster").start()
    yield found
    found.stop()


async def test_a_master_killed_while_publishing_loses_nothing(own_cluster, live_site):
    """20 msgs/s to 200 subscribers over topics on all three masters; one master is
    SIGKILLed: its replica takes over and every subscriber receives every seq of every
    topic exactly once, in order."""
    redis_cluster = own_cluster
    site = live_site(redis=redis_cluster.url, realtime=FAST, workers=2)
    slots = masters_by_slot(redis_cluster.url)
    chosen = topics_on_every_master(site.prefix, slots)
    topics = sorted(chosen.values())
    victim_node, victim = next(iter(chosen.items()))
    site.shell(MAKE_TOPICS.format(slugs=topics))
    clients = await subscribers(site, 200, topics)
    count = 180  # 60 per topic, 9 s at 20 msgs/s
    publisher = start_publisher(site, topics, count, 0.05)
    await clients[0].wait_for(victim, 10, timeout=30)
    redis_cluster.kill(victim_node[1])
    await asyncio.to_thread(publisher.popen.wait, 120)
    assert publisher.popen.returncode == 0, publisher.output()
    after = masters_by_slot(redis_cluster.url)
    assert after.owner(keys.topic_channel(site.prefix, victim).encode()) != victim_node
    each = count // len(topics)
    for c in clients:
        for topic in topics:
            await c.wait_for(topic, each, timeout=60)
    for c in clients:
        for topic in topics:
            assert c.raw[topic] == list(range(1, each + 1)), (topic, c.raw[topic])
    for c in clients:
        await c.stop()


async def test_presence_and_whispers_cross_processes_on_the_cluster(live_site, redis_cluster):
    """The roster (hashes with the topic as hash tag), its signals and whispers (SPUBLISH on
    the topic's channel) reach a connection on another process."""
    from tests.helpers.processes import start_daphne
    from tests.test_families import (
        NEW_ORDER,
        ann_and_boss_across_processes,
        frame_of,
        request,
        start_site,
    )

    site = start_site(lambda **o: live_site(redis=redis_cluster.url, **o))
    order = int(site.shell(NEW_ORDER).split()[-1])
    other, port = start_daphne(site.env, site.tmp_path / "second.log")
    try:
        topic = f"orders:{order}"
        ann, boss = await ann_and_boss_across_processes(site, topic, port)
        await request(boss, {"type": "publish", "topic": topic, "data": {"n": 1}})
        assert (await frame_of(ann, "message", topic=topic))["data"] == {"n": 1}
        for ws in (ann, boss):
            await ws.close()
    finally:
        other.stop()


def check_ids(settings, realtime: dict, layer_url: str | None = None) -> list[str]:
    from realtime.checks import check_realtime_settings

    settings.REALTIME = realtime
    if layer_url is not None:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [layer_url], "prefix": "t"},
            }
        }
    return [e.id for e in check_realtime_settings()]


def test_checks_refuse_a_cluster_url_where_a_single_redis_is_meant(settings, redis_cluster):
    single_node = f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"
    # A cluster node behind a single-Redis URL: topics on other masters would fail (MOVED).
    assert check_ids(settings, {"REDIS_URL": single_node}) == ["realtime.E012"]
    # channels_redis cannot use a cluster.
    assert check_ids(settings, {}, layer_url=redis_cluster.url) == ["realtime.E010"]


def test_checks_refuse_a_cluster_url_for_a_single_redis(settings, redis_url):
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    assert check_ids(settings, {"REDIS_URL": f"redis+cluster://{host_port}/0"}) == ["realtime.E013"]
    assert check_ids(settings, {"REDIS_URL": redis_url}) == []


@pytest.mark.parametrize(
    "value, error",
    [
        ("redis+cluster://a:7000/2", "realtime.E011"),
        ("redis+cluster://a/0", "realtime.E011"),
        ("http://a:7000/0", "realtime.E003"),
        (7000, "realtime.E003"),
    ],
)
def test_checks_refuse_malformed_redis_urls(settings, value, error):
    assert check_ids(settings, {"REDIS_URL": value}) == [error]


def test_a_cluster_site_with_the_in_memory_layer_passes_its_checks(settings, redis_cluster):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.DEBUG = False
    assert check_ids(settings, {"REDIS_URL": redis_cluster.url}) == []


def move_slot(redis_cluster: EmbeddedCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` (and any keys in it) from master port ``source`` to ``target``."""
    import redis

    nodes = {port: redis.Redis(port=port) for port in redis_cluster.alive()}
    ids = {port: client.execute_command("CLUSTER MYID").decode() for port, client in nodes.items()}
    nodes[target].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
    nodes[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
    while keys_left := nodes[source].execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        nodes[source].execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys_left
        )
    for port in redis_cluster.master_ports():
        nodes[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])
    for client in nodes.values():
        client.close()


async def test_a_topic_whose_slot_moves_is_followed_to_its_new_master(redis_cluster, live_site):
    """Redis 7 tells the subscribers of a moved slot's channels (sunsubscribe): the hubs
    subscribe again on the new owner and fill the gap from the database."""
    own_cluster = redis_cluster  # the module's: the cluster stays whole (a slot moved)
    site = live_site(redis=own_cluster.url, realtime=FAST, workers=2)
    topic = "moving"
    site.shell(MAKE_TOPICS.format(slugs=[topic]))
    clients = await subscribers(site, 10, [topic])
    for i in range(5):
        site.publish(topic, json.dumps(i))
    for c in clients:
        await c.wait_for(topic, 5)
    channel = keys.topic_channel(site.prefix, topic).encode()
    slots = masters_by_slot(own_cluster.url)
    source = slots.owner(channel)[1]
    target = next(port for _, port in slots.masters() if port != source)
    move_slot(own_cluster, key_slot(channel), source, target)
    assert masters_by_slot(own_cluster.url).owner(channel)[1] == target
    for i in range(5, 10):
        site.publish(topic, json.dumps(i))
    for c in clients:
        await c.wait_for(topic, 10, timeout=30)
        assert c.raw[topic] == list(range(1, 11))
    assert "moved away" in "".join(path.read_text() for path in site.tmp_path.glob("daphne-*.log"))
    for c in clients:
        await c.stop()


TIMED_PUBLISHER = (
    "import time; from realtime import publish\n"
    "took = []\n"
    "for i in range(3):\n"
    "    started = time.monotonic()\n"
    "    publish({topic!r}, {{'i': i}})\n"
    "    took.append(time.monotonic() - started)\n"
    "print('longest', max(took))\n"
)


async def test_a_master_that_stops_answering_holds_no_publisher(own_cluster, live_site):
    """A master SIGSTOPped (it answers nothing): a publish waits at most about the fan-out
    timeout (no retries, no slot-map reloads in the publisher's thread); the outbox sweep
    delivers once the cluster has failed over."""
    import signal

    site = live_site(redis=own_cluster.url, realtime=FAST)
    topic = "stalled"
    site.shell(MAKE_TOPICS.format(slugs=[topic]))
    clients = await subscribers(site, 3, [topic])
    owner = masters_by_slot(own_cluster.url).owner(keys.topic_channel(site.prefix, topic).encode())
    own_cluster.processes[owner[1]].send_signal(signal.SIGSTOP)
    try:
        output = site.shell(TIMED_PUBLISHER.format(topic=topic))
    finally:
        own_cluster.processes[owner[1]].send_signal(signal.SIGCONT)
    longest = float(output.split("longest")[-1])
    # FANOUT_TIMEOUT is 0.1 s: a connect and a read at most. With redis-py's default retries
    # each publish took 1.2-2.5 s.
    assert longest < 1.0, output
    for c in clients:
        await c.wait_for(topic, 3, timeout=30)
        assert c.raw[topic] == [1, 2, 3]
    for c in clients:
        await c.stop()
