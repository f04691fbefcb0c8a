"""The deployment of deploy/: real nginx (Debian's package) with deploy/nginx/realtime.conf in
front of ``python -m realtime.server --workers 2``, PostgreSQL and Redis.

Proves: pages, static files, /readyz and /ws/ work through nginx; the WebSocket Origin check
holds behind it; the app sees the visitor's address, not nginx's; a browser page goes live
through it; one worker killed, its clients reconnect through nginx and miss nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import expect
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from realtime.embedded import free_port, wait_for_port
from tests.browser.conftest import browser  # noqa: F401 (the module's Chromium)
from tests.helpers.client import ResumingClient
from tests.helpers.processes import ROOT, Proc, manage

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
SITE_CONF = ROOT / "deploy" / "nginx" / "realtime.conf"


def site_config(
    app_port: int, port: int, static: Path, hosts: tuple[str, str] | None = None
) -> str:
    """deploy/nginx/realtime.conf with the lines marked "test:" pointed at this test: one
    host (127.0.0.1:``app_port``), or two (``hosts``, both on ``app_port``) with the second
    host's line uncommented."""
    text = SITE_CONF.read_text()
    first, second = hosts or ("127.0.0.1", None)
    replacements = [
        (r"server 127\.0\.0\.1:8000 ", f"server {first}:{app_port} "),
        (r"# server 10\.0\.0\.3:8000 ", f"server {second}:{app_port} " if second else "# "),
        (r"listen 80;", f"listen 127.0.0.1:{port};"),
        (r"listen \[::\]:80;.*\n", ""),
        (r"server_name example\.com;", "server_name _;"),
        (r"alias /var/lib/realtime/static/;", f"alias {static}/;"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"deploy/nginx/realtime.conf no longer has {pattern!r}"
    return text


def main_config(prefix: Path, site: str) -> str:
    """A minimal nginx.conf that includes the site (Debian's would, from sites-enabled)."""
    return f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
}}
"""


@pytest.fixture
def deployment(live_site, postgres_database, tmp_path):
    """(site, nginx base URL): two workers on PostgreSQL and Redis behind real nginx."""
    if not os.path.exists(NGINX):
        pytest.fail(f"No nginx at {NGINX}: scripts/test installs Debian's nginx.")
    var = tmp_path / "var"
    site = live_site(
        workers=2,
        DATABASE_URL=postgres_database,
        VAR_DIR=str(var),
        PROXY_HEADERS="1",
        USE_X_FORWARDED_HOST="1",
        REALTIME=json.dumps({"SCHEDULER_TICK": 0.2}),
    )
    manage(site.env, "collectstatic", "--noinput", "-v", "0")
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site_config(site.port, port, var / "static")))
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    nginx = Proc([NGINX, "-p", str(prefix), "-c", str(conf)], dict(os.environ), prefix / "out.log")
    try:
        wait_for_port(port, timeout=15)
        yield site, f"http://127.0.0.1:{port}"
    finally:
        nginx.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


async def test_site_works_through_nginx_and_survives_a_killed_worker(deployment):
    site, base = deployment
    status, body, _ = get(base + "/")
    assert status == 200 and "<html" in body.lower()
    status, _, headers = get(base + "/static/realtime/site.css")
    assert status == 200 and headers.get("Cache-Control") == "max-age=604800"  # by nginx
    status, body, _ = get(base + "/readyz")
    assert status == 200 and json.loads(body)["database"] == "ok"
    assert get(base + "/healthz")[:2] == (200, "ok")
    # /metrics from this host is allowed, and a forged X-Forwarded-For changes nothing:
    # nginx replaces it with the real address, which daphne (PROXY_HEADERS) takes as the
    # client's: its access log shows the visitor's address, never the forged one.
    assert get(base + "/metrics", {"X-Forwarded-For": "203.0.113.9"})[0] == 200
    assert get(base + "/?from=test", {"X-Forwarded-For": "203.0.113.9"})[0] == 200
    site.daphne.wait_for_output('"GET /?from=test"')
    assert "203.0.113.9" not in site.daphne.output()

    ws_url = base.replace("http://", "ws://") + "/ws/"
    with pytest.raises(InvalidStatus):  # the Origin check holds behind the proxy
        async with connect(ws_url, origin="http://evil.example", open_timeout=5):
            pass

    clients = [ResumingClient(ws_url, ["chat"], origin=base).start() for _ in range(12)]
    try:
        for client in clients:
            await asyncio.wait_for(client.subscribed.wait(), 15)
        first = await asyncio.to_thread(site.publish, "chat", json.dumps("through nginx"))
        for client in clients:
            await client.wait_for("chat", first)

        workers = psutil.Process(site.daphne.pid).children()
        assert len(workers) == 2

        def clients_of(worker: psutil.Process) -> int:
            return sum(
                c.status == psutil.CONN_ESTABLISHED and c.laddr.port == site.port
                for c in worker.net_connections("tcp")
            )

        # The worker holding the most of nginx's sockets: a shared port need not spread
        # twelve at all (all twelve on one worker was seen, and then no client came back).
        max(workers, key=clients_of).kill()
        last = first
        for i in range(10):
            last = await asyncio.to_thread(site.publish, "chat", json.dumps(f"meanwhile {i}"))
        for client in clients:
            await client.wait_for("chat", last, timeout=30)
            assert client.received["chat"] == list(range(first, last + 1))
        assert sum(c.connects for c in clients) > len(clients)  # some came back via nginx
        status, body, _ = await asyncio.to_thread(get, base + "/readyz")
        assert status == 200
    finally:
        for client in clients:
            await client.stop()


def test_a_browser_page_goes_live_through_nginx(deployment, browser):  # noqa: F811
    site, base = deployment
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(base + "/topics/chat/")
        expect(page.locator("#status")).to_have_text("live")
        text = f"via nginx {uuid.uuid4().hex[:6]}"
        site.publish("chat", json.dumps({"text": text}))
        page.get_by_text(text).wait_for()
    finally:
        context.close()
