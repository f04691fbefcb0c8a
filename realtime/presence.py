"""What a hub tells the outside every ``EVERY`` seconds: how many local connections hold each
topic (Redis: the admin's "watching now", ``manage.py topics``), its figures for the admin's
status page (Redis), and its gauges and counts for ``/metrics``. Runs beside the hub as its
companion task (``engine.hub()`` starts it); the hub itself only reads Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from realtime import cluster, fanout, keys, metrics
from realtime.aio import raise_if_cancelled

EVERY, TTL = 2.0, 10


async def report(hub: Any) -> None:
    """Every ``EVERY`` s, until cancelled: presence and stats to Redis (rewritten only when
    the counts changed, else their expiry renewed), gauges and counts to the metrics."""
    key = keys.presence_key(hub.prefix, hub.id)
    stats_key = keys.hub_stats_key(hub.prefix, hub.id)
    client = cluster.async_client(hub.url, socket_connect_timeout=2)
    try:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(EVERY)
            hub.report_gauges()
            metrics.local.flush()
            try:
                if hub.presence_dirty:
                    hub.presence_dirty = False
                    await fanout.write_presence(client, key, hub.counts(), TTL)
                else:
                    await client.expire(key, TTL)
                await fanout.write_hub_stats(client, stats_key, hub.stats(), TTL)
            except Exception:
                hub.presence_dirty = True
    finally:
        try:
            await asyncio.wait_for(client.aclose(), timeout=1.0)
        except BaseException:  # noqa: BLE001 (also CancelledError: we are shutting down)
            pass
