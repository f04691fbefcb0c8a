"""Operator endpoints against real daphne: /healthz, /readyz (with Redis going away and coming
back), /metrics (access, multiprocess sums, what is counted), and their unit parts."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime import keys, metrics
from realtime.embedded import EmbeddedRedis
from realtime.ops import address_allowed, allowed_networks
from tests.helpers.client import ResumingClient


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_status(url: str, status: int, timeout: float) -> tuple[int, str, float]:
    """Poll ``url`` until it answers ``status``; (status, body, seconds it took)."""
    started = time.monotonic()
    while True:
        found, body = get(url)
        waited = time.monotonic() - started
        if found == status:
            return found, body, waited
        if waited > timeout:
            raise AssertionError(f"{url} still {found} after {timeout}s: {body}")
        time.sleep(0.2)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


@pytest.fixture
def redis_server(tmp_path):
    server = EmbeddedRedis(directory=tmp_path / "redis").start()
    yield server
    server.stop()


def test_readyz_turns_503_without_redis_and_200_when_it_is_back(live_site, redis_server):
    site = live_site(redis=redis_server.url, scheduler=False)
    assert get(site.url + "/healthz") == (200, "ok")
    _, body, _ = wait_status(site.url + "/readyz", 200, 10)
    report = json.loads(body)
    assert report["database"] == "ok" and report["redis"] == "ok"
    assert report["hub"] == "subscribed" and report["failed"] == []

    redis_server.stop()
    status, body, waited = wait_status(site.url + "/readyz", 503, 10)
    report = json.loads(body)
    assert "redis" in report["failed"] and report["database"] == "ok"
    assert report["redis"] != "ok"
    assert waited < 10
    # The process still serves: liveness does not depend on Redis.
    assert get(site.url + "/healthz") == (200, "ok")

    redis_server.start()
    _, body, _ = wait_status(site.url + "/readyz", 200, 30)
    assert json.loads(body)["hub"] == "subscribed"


def test_readyz_names_a_database_that_went_away(live_site, postgres_via_proxy):
    database_url, start_db, stop_db = postgres_via_proxy
    site = live_site(scheduler=False, DATABASE_URL=database_url)
    wait_status(site.url + "/readyz", 200, 10)
    stop_db()
    _, body, waited = wait_status(site.url + "/readyz", 503, 10)
    report = json.loads(body)
    assert report["failed"] == ["database"] and report["redis"] == "ok"
    start_db()
    wait_status(site.url + "/readyz", 200, 15)


def test_probes_need_no_allowed_host_and_are_not_logged(live_site):
    site = live_site(scheduler=False)
    wait_status(site.url + "/readyz", 200, 10)
    lb = {"Host": "10.1.2.3:8000"}  # what a load balancer probing by address sends
    assert get(site.url + "/healthz", lb)[0] == 200
    assert get(site.url + "/readyz", lb)[0] == 200
    assert get(site.url + "/", lb)[0] == 400  # Django pages keep ALLOWED_HOSTS
    assert get(site.url + "/")[0] == 200
    request = urllib.request.Request(site.url + "/healthz", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405
    # The test's daphne writes its access log (ACCESS_LOG): pages are in it, probes are not.
    site.daphne.wait_for_output('"GET /" 200')
    log = site.daphne.output()
    assert "/healthz" not in log and "/readyz" not in log


def test_metrics_is_only_for_allowed_addresses_or_the_token(live_site):
    site = live_site(
        scheduler=False, METRICS_ALLOWED_IPS="10.0.0.0/8", METRICS_TOKEN="s3cret-token"
    )
    assert get(site.url + "/metrics")[0] == 403  # loopback is not in the list now
    assert get(site.url + "/metrics", {"Authorization": "Bearer wrong"})[0] == 403
    assert get(site.url + "/metrics", {"Authorization": "Basic s3cret-token"})[0] == 403
    status, body = get(site.url + "/metrics", {"Authorization": "Bearer s3cret-token"})
    assert status == 200 and "realtime_connections_open" in body


async def test_metrics_count_what_the_site_does_over_every_process(live_site, tmp_path):
    directory = tmp_path / "prometheus"
    site = live_site(PROMETHEUS_MULTIPROC_DIR=str(directory))
    client = ResumingClient(site.ws_url, ["chat"]).start()
    try:
        await asyncio.wait_for(client.subscribed.wait(), 15)
        _, before = await asyncio.to_thread(get, site.url + "/metrics")
        published = sample(before, "realtime_messages_published_total", source="command") or 0
        seq = await asyncio.to_thread(site.publish, "chat", '{"text": "counted"}')
        await client.wait_for("chat", seq)
        # A refused handshake and an error frame.
        with pytest.raises(InvalidStatus):
            async with connect(site.ws_url, origin="http://evil.example", open_timeout=5):
                pass
        async with connect(site.ws_url, origin=f"http://127.0.0.1:{site.port}") as ws:
            await ws.recv()
            await ws.send('{"type": "subscribe"}')
            assert json.loads(await ws.recv())["code"] == "bad_request"

        def scraped() -> str:
            deadline = time.monotonic() + 15
            while True:
                status, body = get(site.url + "/metrics")
                assert status == 200
                ticks = sample(body, "realtime_scheduler_ticks_total", result="ok")
                # The second socket's close reaches the server a moment after ours.
                settled = sample(body, "realtime_connections_open") == 1
                if (ticks and settled) or time.monotonic() > deadline:
                    return body
                time.sleep(0.2)

        body = await asyncio.to_thread(scraped)
    finally:
        await client.stop()
    assert sample(body, "realtime_connections_open") == 1
    assert sample(body, "realtime_subscriptions") == 1
    assert sample(body, "realtime_frames_delivered_total") >= 1
    assert sample(body, "realtime_messages_published_total", source="command") == published + 1
    assert sample(body, "realtime_handshakes_refused_total", reason="origin") == 1
    assert sample(body, "realtime_error_frames_total", code="bad_request") == 1
    assert sample(body, "realtime_hubs_subscribed") == 1
    assert sample(body, "realtime_outbox_pending") == 0
    # The scheduler is another process: its ticks reach /metrics through the directory.
    assert sample(body, "realtime_scheduler_ticks_total", result="ok") >= 1
    assert sample(body, "realtime_scheduler_leader") == 1
    count = sample(body, "realtime_delivery_latency_seconds_count")
    assert count is not None and count >= 1
    assert sample(body, "realtime_delivery_latency_seconds_bucket", le="+Inf") == count
    assert any(directory.iterdir())


def test_local_counts_flush_in_place():
    local = metrics.Local()
    held = local.buckets  # the hub's loop holds this list between flushes
    held[3] += 2
    local.latency_sum += 0.01
    local.frames += 2
    before = metrics.FRAMES._value.get()
    local.flush()
    assert held is local.buckets and not any(held) and local.latency_sum == 0
    assert metrics.FRAMES._value.get() == before + 2


def test_events_carry_the_commit_time_and_old_ones_still_decode():
    assert keys.decode_event(keys.encode_event(7, '{"a": 1}', 1700000000.25)) == (
        7,
        1700000000.25,
        b'{"a": 1}',
    )
    assert keys.decode_event(keys.encode_event(8, '{"a": "b c"}')) == (8, 0.0, b'{"a": "b c"}')


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.2.3.4", True),
        ("192.168.1.1", False),
        ("not-an-ip", False),
        (None, False),
        ("", False),
    ],
)
def test_metrics_address_rules(settings, address, allowed):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "::1", "10.0.0.0/8"]
    assert address_allowed(address, allowed_networks()) is allowed


async def test_closes_made_by_daphne_itself_are_counted(live_site):
    """A frame over --websocket-max-message-size is closed 1009 by autobahn, before the
    application sees it: the closes metric counts it all the same."""
    site = live_site(scheduler=False)  # daphne runs with --websocket-max-message-size 65536
    async with connect(site.ws_url, subprotocols=["realtime.v1"], max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "id": "x" * 100_000}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009

    def counted() -> float | None:
        deadline = time.monotonic() + 15
        while True:
            value = sample(
                get(site.url + "/metrics")[1], "realtime_server_closes_total", code="1009"
            )
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    assert await asyncio.to_thread(counted) == 1
