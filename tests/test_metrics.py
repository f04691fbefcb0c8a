"""realtime.metrics: hubs push their gauges (the module knows no hub), the hot path's plain
counts flush into prometheus-client, and bulk histogram counts equal one-by-one observations."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from realtime import metrics


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_hub_gauges_are_sums_over_the_hubs_that_pushed_them():
    metrics.hub_gauges("test-a", 3, 5, True)
    metrics.hub_gauges("test-b", 2, 1, False)
    assert value("realtime_connections_open") >= 5
    before = value("realtime_connections_open")
    metrics.hub_gauges("test-a", 4, 5, True)  # a hub's new figures replace its old ones
    assert value("realtime_connections_open") == before + 1
    subscribed = value("realtime_hubs_subscribed")
    metrics.hub_gone("test-a")
    metrics.hub_gone("test-b")
    assert value("realtime_connections_open") == before - 5  # 6 counted, less a and b
    assert value("realtime_hubs_subscribed") == subscribed - 1


def test_local_counts_flush_into_the_counters():
    metrics.local.flush()  # what earlier tests' hubs counted
    before = value("realtime_frames_delivered_total") or 0
    metrics.local.frames += 7
    metrics.local.buckets[metrics.latency_bucket(0.003)] += 2
    metrics.local.latency_sum += 0.006
    metrics.local.flush()
    assert value("realtime_frames_delivered_total") == before + 7
    assert metrics.local.frames == 0 and not any(metrics.local.buckets)


def test_the_exposition_names_every_metric():
    text = metrics.exposition().decode()
    for name in ("realtime_connections_open", "realtime_outbox_pending", "realtime_server_closes"):
        assert name in text


def test_observe_many_matches_observe():
    registry = CollectorRegistry()
    one = Histogram("one_seconds", "x", buckets=metrics.LATENCY_BUCKETS, registry=registry)
    many = Histogram("many_seconds", "x", buckets=metrics.LATENCY_BUCKETS, registry=registry)
    values = [0.0005, 0.001, 0.003, 0.003, 0.2, 7.0, 30.0, -0.001]
    buckets = [0] * (len(metrics.LATENCY_BUCKETS) + 1)
    for sample in values:
        one.observe(sample)
        buckets[metrics.latency_bucket(sample)] += 1
    metrics.observe_many(many, buckets, sum(values))

    def samples(histogram: Histogram) -> list[tuple[str, float]]:
        return [
            (s.name.split("_", 1)[1], s.value)
            for s in histogram.collect()[0].samples
            if not s.name.endswith("_created")
        ]

    assert samples(many) == samples(one)
