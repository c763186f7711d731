"""producer/metrics.py: metrics live on the registry they are given."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from producer.metrics import ProducerMetrics


def test_metrics_are_per_registry_and_counted() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    metrics = ProducerMetrics(first, "v")
    ProducerMetrics(second, "v")  # no clash: nothing global
    metrics.rows_read.inc(3)
    metrics.entries("b", 2)
    metrics.changes("u", 500)
    metrics.set_frontier(int(time.time() * 1000) - 5000)
    value = first.get_sample_value
    assert value("searchsync_producer_rows_read_total", {"view": "v"}) == 3
    assert value("searchsync_producer_entries_written_total", {"view": "v", "op": "b"}) == 2
    assert value("searchsync_producer_changes_written_total", {"view": "v", "op": "u"}) == 500
    lag = value("searchsync_producer_frontier_lag_seconds", {"view": "v"})
    assert lag is not None and 4 < lag < 60
    assert second.get_sample_value("searchsync_producer_rows_read_total", {"view": "v"}) == 0
