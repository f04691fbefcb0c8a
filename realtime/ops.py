"""Operator endpoints, answered in the ASGI layer before Django: ``/healthz``, ``/readyz`` and
``/metrics``.

They bypass Django's middleware on purpose: a load balancer probes by IP address (the Host
header matches no ``ALLOWED_HOSTS`` entry), over plain HTTP behind a TLS proxy (no HTTPS
redirect), and a probe must not be logged per request nor touch the session. ``/healthz``
says the process serves (no I/O at all). ``/readyz`` checks the database, Redis and this
process's hub, each bounded to ``PROBE_TIMEOUT`` seconds. ``/metrics`` is for
``METRICS_ALLOWED_IPS`` or ``Authorization: Bearer <METRICS_TOKEN>``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from realtime import engine, metrics

logger = logging.getLogger("realtime.ops")

PROBE_TIMEOUT = 2.0
PATHS = ("/healthz", "/readyz", "/metrics")


class OpsEndpoints:
    """ASGI middleware: serve the operator endpoints, pass everything else on."""

    def __init__(self, app: Any):
        self.app = app
        self.last_ready: bool | None = None
        self.hub_started = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if not self.hub_started:
            # The process's first request starts its hub (Redis subscription, presence and
            # status reports), so a worker is subscribed and visible before it has sockets.
            self.hub_started = True
            engine.hub().start()
        if scope["type"] != "http" or scope["path"] not in PATHS:
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD"):
            return await respond(send, 405, b"method not allowed\n", allow=b"GET, HEAD")
        path = scope["path"]
        if path == "/healthz":
            return await respond(send, 200, b"ok", head=scope["method"] == "HEAD")
        if path == "/readyz":
            ready, report = await readiness()
            if ready != self.last_ready:
                log = logger.info if ready else logger.warning
                log("readiness: %s", json.dumps(report))
                self.last_ready = ready
            body = json.dumps(report).encode() + b"\n"
            return await respond(
                send, 200 if ready else 503, body, content_type=b"application/json"
            )
        if not metrics_allowed(scope):
            return await respond(send, 403, b"forbidden: see METRICS_ALLOWED_IPS\n")
        for hub in engine.all_hubs():
            hub.report_gauges()
        metrics.local.flush()
        body = await sync_to_async(metrics.exposition, thread_sensitive=False)()
        return await respond(send, 200, body, content_type=metrics.CONTENT_TYPE.encode())


async def respond(
    send: Any,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    head: bool = False,
    allow: bytes | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


# --- readiness ---------------------------------------------------------------------------------


async def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, report): database and Redis answer, and this process's hub is subscribed."""
    hub = engine.hub()
    database, redis_state, subscribed = await asyncio.gather(
        _bounded(sync_to_async(_database_ping, thread_sensitive=False)()),
        _bounded(_redis_ping(hub.url)),
        hub.wait_ready(PROBE_TIMEOUT),
    )
    report: dict[str, Any] = {
        "database": database,
        "redis": redis_state,
        "hub": "subscribed" if subscribed else "not subscribed",
    }
    failed = [name for name in ("database", "redis") if report[name] != "ok"]
    if not subscribed:
        failed.append("hub")
    counts = hub.counts()
    report.update(
        {
            "status": "failed" if failed else "ok",
            "failed": failed,
            "pid": os.getpid(),
            "connections": counts.pop("_connections"),
            "subscriptions": sum(counts.values()),
        }
    )
    return not failed, report


async def _bounded(probe: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(probe, PROBE_TIMEOUT)
        return "ok"
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def _database_ping() -> None:
    from django.db import close_old_connections, connection

    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _redis_ping(url: str) -> None:
    from realtime import cluster

    client = cluster.async_client(
        url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
    )
    try:
        await client.ping()
    finally:
        await engine._close_quietly(client)


# --- who may read /metrics ---------------------------------------------------------------------


def metrics_allowed(scope: dict[str, Any]) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value.decode("latin1")
                if given.startswith("Bearer ") and hmac.compare_digest(
                    given[7:].strip().encode(), token.encode()
                ):
                    return True
    client = (scope.get("client") or (None,))[0]
    return address_allowed(client, allowed_networks())


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``METRICS_ALLOWED_IPS``: addresses or networks (``10.0.0.0/8``). An entry that is
    neither is skipped here (the system check ``realtime.E005`` names it)."""
    entries = getattr(settings, "METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
    if isinstance(entries, str):
        entries = [entries]
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry), strict=False))
        except ValueError:
            continue
    return networks


def address_allowed(address: str | None, networks: list[Any]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)
