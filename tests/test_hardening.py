"""Handshake and edge hardening against a real daphne: Daphne-Root-Path, slow HTTP clients,
sessions without Origin, the frame budget, shutdown order, a REALTIME that is not JSON."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.browserless import Browserless
from tests.helpers.processes import PYTHON, ROOT, env_for

pytestmark = pytest.mark.e2e


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=10)
        return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.parametrize("plain", [False, True], ids=["realtime.server", "plain-daphne"])
async def test_daphne_root_path_header_is_ignored(live_site, plain):
    site = live_site(scheduler=False, plain=plain)
    evil = {"Daphne-Root-Path": "/evil.example"}
    status, headers = get(site.url + "/topics/staff-room/", evil)  # redirects to sign in
    assert status == 302 and "evil" not in headers["Location"], headers
    async with connect(site.ws_url, subprotocols=["realtime.v1"], additional_headers=evil) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_slow_http_clients_are_closed(live_site):
    site = live_site(scheduler=False, realtime={"HTTP_REQUEST_TIMEOUT": 1.0})

    def slowloris() -> int:
        socks = []
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", site.port), timeout=20)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            socks.append(sock)
        closed = 0
        for sock in socks:
            try:
                closed += sock.recv(1024) == b""  # the server closed it
            except ConnectionResetError:
                closed += 1
            sock.close()
        return closed

    assert await asyncio.to_thread(slowloris) == 200
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:  # still serving
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        await asyncio.sleep(1.5)  # longer than the HTTP timeout: an open socket stays open
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_a_request_head_trickled_byte_by_byte_is_closed_at_its_deadline(live_site):
    """Bytes that keep arriving reset an idle timeout, not the deadline for the whole head
    (nginx's client_header_timeout): 200 sockets sending a header byte every 0.3 s are all
    closed once HTTP_REQUEST_TIMEOUT has passed since they connected (20 of them kept alive
    after a first request: since it ended)."""
    site = live_site(scheduler=False, realtime={"HTTP_REQUEST_TIMEOUT": 2.0})

    def trickle() -> tuple[int, float]:
        socks = []
        for n in range(200):
            if n % 10 == 0:  # a kept-alive connection: the deadline again for its next head
                kept = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
                kept.request("GET", "/healthz")
                answer = kept.getresponse()
                assert answer.status == 200 and answer.read() and not answer.will_close
                sock = kept.sock
            else:
                sock = socket.create_connection(("127.0.0.1", site.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sock.setblocking(False)
            socks.append(sock)
        started = time.monotonic()
        open_ = set(socks)
        while open_ and time.monotonic() - started < 20:
            for sock in list(open_):
                try:
                    if sock.recv(1024) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    try:
                        sock.send(b"a")  # one more byte: the idle timer starts again
                    except OSError:
                        open_.discard(sock)
                except OSError:
                    open_.discard(sock)
            time.sleep(0.3)
        elapsed = time.monotonic() - started
        for sock in socks:
            sock.close()
        return len(socks) - len(open_), elapsed

    closed, elapsed = await asyncio.to_thread(trickle)
    assert closed == 200, f"{200 - closed} trickling sockets still open after {elapsed:.0f}s"
    assert "no complete request head" in site.daphne.output()


async def test_a_request_head_over_the_size_limit_is_refused(live_site):
    site = live_site(scheduler=False)

    def oversized() -> bytes:
        with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try:
                for _ in range(20):
                    sock.sendall(b"X-Big: " + b"b" * 1000 + b"\r\n")  # 20 KB of headers
            except OSError:
                pass
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            return answer

    answer = await asyncio.to_thread(oversized)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


async def test_handshake_without_origin_is_anonymous_even_with_a_session(live_site):
    site = live_site(scheduler=False)
    site.shell(
        "from django.contrib.auth.models import User\n"
        "User.objects.create_user('ann', password='ann-pass-123', is_staff=True)"
    )
    browser = Browserless(site.url)
    key = await asyncio.to_thread(browser.login, "ann", "ann-pass-123")
    cookie = {"Cookie": f"sessionid={key}"}
    async with connect(site.ws_url, subprotocols=["realtime.v1"], additional_headers=cookie) as ws:
        assert json.loads(await ws.recv())["user"] is None
    async with browser.socket(site.ws_url) as ws:  # the same cookie from the site's own page
        assert json.loads(await ws.recv())["user"] == "ann"


async def test_handshake_without_origin_refused_when_required(live_site):
    site = live_site(scheduler=False, realtime={"REQUIRE_ORIGIN": True})
    with pytest.raises(Exception, match="403"):
        async with connect(site.ws_url, subprotocols=["realtime.v1"]):
            pass


async def test_pings_spend_the_frame_budget_then_close_1008(live_site):
    site = live_site(
        scheduler=False, realtime={"FRAME_RATE_PER_S": 1, "FRAME_BURST": 5, "ABUSE_BUDGET": 3}
    )
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        for i in range(50):
            await ws.send(json.dumps({"type": "ping", "id": i}))
        answers = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    answers.append(json.loads(await ws.recv()))
        assert ws.close_code == 1008
        assert [a["type"] for a in answers[:5]] == ["pong"] * 5
        assert {a.get("code") for a in answers[5:]} == {"rate_limited"}


async def test_shutdown_stops_accepting_before_closing_sockets_1001(live_site):
    site = live_site(scheduler=False)
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        site.daphne.popen.send_signal(15)  # SIGTERM, not waiting
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
        assert ws.close_code == 1001
        # A client reconnecting at once is refused rather than accepted by a dying server.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", site.port), timeout=2).close()


@pytest.mark.parametrize("value", ["{not json", "[1, 2", "nope"])
def test_realtime_environment_value_that_is_not_json_fails_clearly(tmp_path, value):
    env = env_for(f"sqlite:///{tmp_path / 'db.sqlite3'}", "redis://127.0.0.1:1/0", REALTIME=value)
    result = subprocess.run(
        [PYTHON, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "REALTIME" in result.stderr
    assert "JSON object" in result.stderr
