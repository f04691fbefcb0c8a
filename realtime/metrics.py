"""Prometheus metrics, with the ``prometheus-client`` library, summed over the host's processes.

Every process that counts (daphne workers, the scheduler, commands) writes its values to
``PROMETHEUS_MULTIPROC_DIR`` when that environment variable is set (prometheus-client's
multiprocess mode, as with gunicorn); ``/metrics`` in any worker then reads them all.
``python -m realtime.server --workers N`` sets it for its workers; without it each process
reports only its own values.

The fan-out's hot path does not call prometheus-client per frame: the hub counts frames and
commit → write latencies in plain integers (``Local``), flushed into the metrics every
``presence.EVERY`` seconds and before every scrape; hubs push their gauges (``hub_gauges``),
the scheduler sets the outbox backlog. Rare events (refusals, error frames, slow readers,
resyncs, scheduler ticks) are counted where they happen. Nothing here queries the database
or reads another module's state.
"""

from __future__ import annotations

import bisect
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# prometheus-client's multiprocess mode writes under this directory; RealtimeConfig.ready
# makes it before anything imports this module.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST

CONNECTIONS = Gauge(
    "realtime_connections_open",
    "WebSocket connections open.",
    multiprocess_mode="livesum",
)
SUBSCRIPTIONS = Gauge(
    "realtime_subscriptions",
    "Topic subscriptions held by open connections.",
    multiprocess_mode="livesum",
)
HUBS_SUBSCRIBED = Gauge(
    "realtime_hubs_subscribed",
    "Server processes whose hub holds its Redis subscription (1 per healthy worker).",
    multiprocess_mode="livesum",
)
FRAMES = Counter(
    "realtime_frames_delivered",
    "Message frames written to visitors' sockets by the live fan-out.",
)
CORKED = Counter(
    "realtime_messages_corked",
    "Messages the hub delivered together with others it had read from Redis at once (each "
    "subscriber's frames of them joined in one send): the process fell behind its messages.",
)
REPLAYED = Counter(
    "realtime_frames_replayed",
    "Message frames sent from the database (backlog, resume, gap fill).",
)
REPLAY_READS = Counter(
    "realtime_replay_page_reads",
    "Pages of stored messages read from the database for replays; each read is shared by "
    "every connection of the process that needs that page.",
)
PUBLISHED = Counter(
    "realtime_messages_published",
    "Messages stored and committed, by source.",
    ["source"],
)
REFUSED = Counter(
    "realtime_handshakes_refused",
    "WebSocket handshakes refused, by reason.",
    ["reason"],
)
ERROR_FRAMES = Counter(
    "realtime_error_frames",
    "Error frames sent to clients, by code.",
    ["code"],
)
CLOSES = Counter(
    "realtime_server_closes",
    "Connections the server closed, by close code.",
    ["code"],
)
SLOW_READERS = Counter(
    "realtime_slow_readers_dropped",
    "Connections dropped because their unsent buffer grew past MAX_SEND_BUFFER.",
)
RESYNCS = Counter(
    "realtime_hub_resyncs",
    "Times a hub re-established its Redis subscription and resynced from the database.",
)
FANOUT_FAILURES = Counter(
    "realtime_fanout_failures",
    "After-commit fan-outs that failed or were skipped (the outbox sweep sends those).",
    ["reason"],
)
TICKS = Counter(
    "realtime_scheduler_ticks",
    "Scheduler ticks, by result (ok, failed).",
    ["result"],
)
SCHEDULER_LEADER = Gauge(
    "realtime_scheduler_leader",
    "Schedulers holding the leader lock (ticking): 1 on a healthy site.",
    multiprocess_mode="livesum",
)
LAST_TICK = Gauge(
    "realtime_scheduler_last_tick_timestamp_seconds",
    "When the scheduler last finished a tick (Unix time).",
    multiprocess_mode="max",
)
FEED_FAILURES = Counter(
    "realtime_feed_failures",
    "Feed runs that raised, by topic.",
    ["topic"],
)
OUTBOX_PENDING = Gauge(
    "realtime_outbox_pending",
    "Stored messages not yet marked as fanned out (set by the scheduler every few seconds).",
    multiprocess_mode="livemax",
)
SWEPT = Counter(
    "realtime_outbox_swept",
    "Messages the outbox sweep published (their after-commit fan-out had not).",
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY = Histogram(
    "realtime_delivery_latency_seconds",
    "From the commit of a message to the write of its frame to a visitor's socket (live fan-out).",
    buckets=LATENCY_BUCKETS,
)


class Local:
    """What the hot path counts in plain integers, until ``flush``."""

    __slots__ = ("frames", "replayed", "corked", "buckets", "latency_sum")

    bounds = LATENCY_BUCKETS  # bisect_left(bounds, x): the first bucket whose bound >= x

    def __init__(self) -> None:
        self.frames = 0
        self.replayed = 0
        self.corked = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0

    def flush(self) -> None:
        frames, self.frames = self.frames, 0
        replayed, self.replayed = self.replayed, 0
        corked, self.corked = self.corked, 0
        if corked:
            CORKED.inc(corked)
        if frames:
            FRAMES.inc(frames)
        if replayed:
            REPLAYED.inc(replayed)
        if any(self.buckets):
            # Zeroed in place: the hub's loop holds a reference to this list.
            buckets = self.buckets[:]
            for i in range(len(buckets)):
                self.buckets[i] -= buckets[i]
            total, self.latency_sum = self.latency_sum, 0.0
            observe_many(LATENCY, buckets, total)


local = Local()


def observe_many(histogram: Histogram, buckets: list[int], total: float) -> None:
    """Add per-bucket counts (non-cumulative, one per upper bound and +Inf) to a histogram.

    prometheus-client has no public call for this; ``Histogram`` keeps non-cumulative bucket
    values in ``_buckets`` and the sum in ``_sum`` (the version in requirements.txt;
    ``tests/test_metrics.py`` checks the result against ``observe``).
    """
    for i, count in enumerate(buckets):
        if count:
            histogram._buckets[i].inc(count)
    histogram._sum.inc(total)


def latency_bucket(seconds: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


_hubs: dict[str, tuple[int, int, bool]] = {}


def hub_gauges(hub_id: str, connections: int, subscriptions: int, subscribed: bool) -> None:
    """A hub's figures (it pushes them; this module knows no hub): the gauges are their sums
    over the process's hubs."""
    _hubs[hub_id] = (connections, subscriptions, subscribed)
    _set_hub_gauges()


def hub_gone(hub_id: str) -> None:
    _hubs.pop(hub_id, None)
    _set_hub_gauges()


def _set_hub_gauges() -> None:
    figures = list(_hubs.values())
    CONNECTIONS.set(sum(f[0] for f in figures))
    SUBSCRIPTIONS.set(sum(f[1] for f in figures))
    HUBS_SUBSCRIBED.set(sum(1 for f in figures if f[2]))


def exposition() -> bytes:
    """The text format of every metric of the host (of this process only, without
    ``PROMETHEUS_MULTIPROC_DIR``)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """A worker died: forget its live gauges (its counters keep counting in the sums)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
