"""consumer/metrics.py: the runbook's metric names, on a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from consumer.metrics import ConsumerMetrics


def test_metrics_live_in_the_given_registry() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    a = ConsumerMetrics(first, "a")
    ConsumerMetrics(second, "b")  # no clash: no global registry involved
    a.latency.observe(0.3)
    a.events.labels("upsert").inc(3)
    a.errors.labels("throttled").inc()
    a.buffer.set(12)
    a.applied_through(2, 1_700_000_000_500)
    a.owns(2, True)
    text = generate_latest(first).decode()
    assert "opensearch_sync_latency_seconds_bucket" in text
    assert 'opensearch_sync_events_total{op="upsert"} 3.0' in text
    assert 'opensearch_sync_errors_total{kind="throttled"} 1.0' in text
    assert "opensearch_sync_buffer_size 12.0" in text
    applied = 'opensearch_sync_partition_applied_timestamp_seconds{partition="2"} 1.7000000005e+09'
    assert applied in text
    assert 'opensearch_sync_partition_owned{consumer="a",partition="2"} 1.0' in text
    assert 'op="upsert"' not in generate_latest(second).decode()
