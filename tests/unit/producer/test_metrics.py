"""producer/metrics.py: metrics live on the registry they are given."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from searchsync.producer.metrics import ProducerMetrics


def test_metrics_are_per_registry_and_counted() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    metrics = ProducerMetrics(first, "v")
    ProducerMetrics(second, "v")  # no clash: nothing global
    metrics.rows_read.inc(3)
    metrics.entries(b"b", 2)
    metrics.changes(b"u", 500)
    metrics.set_frontier(int(time.time() * 1000) - 5000)
    value = first.get_sample_value
    assert value("searchsync_producer_rows_read_total", {"view": "v"}) == 3
    assert value("searchsync_producer_entries_written_total", {"view": "v", "op": "b"}) == 2
    assert value("searchsync_producer_changes_written_total", {"view": "v", "op": "u"}) == 500
    lag = value("searchsync_producer_frontier_lag_seconds", {"view": "v"})
    assert lag is not None and 4 < lag < 60
    assert second.get_sample_value("searchsync_producer_rows_read_total", {"view": "v"}) == 0


def test_a_buffer_measurement_sets_per_partition_buffers_dead_letters_and_redis_health() -> None:
    from searchsync.common.buffer import BufferReading

    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry, "v")
    metrics.health.failed("Redis", "Connection refused")
    metrics.measured(BufferReading((3, 0, 7), dead_letters=2), paused=True)
    value = registry.get_sample_value
    assert value("searchsync_producer_buffer_size", {"view": "v"}) == 10
    for partition, buffer in enumerate((3, 0, 7)):
        labels = {"view": "v", "partition": str(partition)}
        assert value("searchsync_producer_partition_buffer_size", labels) == buffer
    assert value("searchsync_producer_dead_letter_stream_length", {"view": "v"}) == 2
    assert value("searchsync_producer_backpressure_active", {"view": "v"}) == 1
    assert metrics.health.snapshot().failing == ()


def test_a_leading_producer_is_expected_to_move_its_checkpoint_unless_paused() -> None:
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry, "v")
    from searchsync.common.buffer import BufferReading

    assert metrics.health.snapshot().work == ""  # standby: nothing expected
    metrics.lead(True)
    assert registry.get_sample_value("searchsync_producer_leader", {"view": "v"}) == 1
    assert "producer lease" in metrics.health.snapshot().work
    metrics.measured(BufferReading((9000,), 0), paused=True)
    assert metrics.health.snapshot().work == ""  # backpressure: waiting is right
    metrics.measured(BufferReading((0,), 0), paused=False)
    assert metrics.health.snapshot().work != ""
    metrics.lead(False)
    assert registry.get_sample_value("searchsync_producer_leader", {"view": "v"}) == 0
    assert metrics.health.snapshot().work == ""


def test_session_failures_are_charged_to_redis_or_materialize_until_progress() -> None:
    import psycopg
    from redis.exceptions import ConnectionError as RedisConnectionError

    metrics = ProducerMetrics(CollectorRegistry(), "v")
    metrics.session_failed(psycopg.OperationalError("refused"), "connection refused")
    metrics.session_failed(RedisConnectionError("down"), "Error 111")
    assert {name for name, _, _ in metrics.health.snapshot().failing} == {"Materialize", "Redis"}
    metrics.set_frontier(int(time.time() * 1000))
    assert {name for name, _, _ in metrics.health.snapshot().failing} == {"Redis"}
