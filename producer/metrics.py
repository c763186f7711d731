"""The producer's Prometheus metrics, on a registry the caller owns (no global state).

Served on METRICS_PORT by :func:`serve` (0 = no endpoint); tests and benchmarks
build their own registry and read it directly.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["ProducerMetrics", "serve"]


class ProducerMetrics:
    """Every producer metric. Buffer sizes and written counts are in changes."""

    def __init__(self, registry: CollectorRegistry, view: str) -> None:
        labels = ["view"]
        self.rows_read = Counter(
            "searchsync_producer_rows_read",
            "SUBSCRIBE (or poll) rows read, progress rows included",
            labels,
            registry=registry,
        ).labels(view)
        self._entries = Counter(
            "searchsync_producer_entries_written",
            "Stream entries written, by op (u, d, b, p, r)",
            ["view", "op"],
            registry=registry,
        )
        self._changes = Counter(
            "searchsync_producer_changes_written",
            "Changes written to the partition streams, by op (u, d)",
            ["view", "op"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "searchsync_producer_dead_letters",
            "Changes sent to the dead-letter stream (key violations, unreadable rows)",
            labels,
            registry=registry,
        ).labels(view)
        self.frontier_ts = Gauge(
            "searchsync_producer_frontier_timestamp_ms",
            "Checkpointed frontier: every change below this Materialize timestamp is in a stream",
            labels,
            registry=registry,
        ).labels(view)
        self._frontier_value = 0
        frontier_lag = Gauge(
            "searchsync_producer_frontier_lag_seconds",
            "Wall clock minus the checkpointed frontier",
            labels,
            registry=registry,
        ).labels(view)
        frontier_lag.set_function(self._lag)
        self.buffer_size = Gauge(
            "searchsync_producer_buffer_size",
            "Changes written but not yet acknowledged by the consumer group",
            labels,
            registry=registry,
        ).labels(view)
        self.backpressure = Gauge(
            "searchsync_producer_backpressure_active",
            "1 while the SUBSCRIBE stream is paused by backpressure",
            labels,
            registry=registry,
        ).labels(view)
        self.reconnects = Counter(
            "searchsync_producer_reconnects",
            "Reconnections after a Materialize or Redis failure",
            labels,
            registry=registry,
        ).labels(view)
        self.snapshots = Counter(
            "searchsync_producer_snapshots",
            "Snapshots written as upserts (first start or refused AS OF)",
            labels,
            registry=registry,
        ).labels(view)
        self.reconciles = Counter(
            "searchsync_producer_reconciles",
            "Reconcile markers written after a snapshot",
            labels,
            registry=registry,
        ).labels(view)
        self._view = view

    def entries(self, op: str, count: int = 1) -> None:
        self._entries.labels(self._view, op).inc(count)

    def changes(self, op: str, count: int) -> None:
        self._changes.labels(self._view, op).inc(count)

    def set_frontier(self, frontier: int) -> None:
        self._frontier_value = frontier
        self.frontier_ts.set(frontier)

    def _lag(self) -> float:
        if not self._frontier_value:
            return 0.0
        return max(0.0, time.time() - self._frontier_value / 1000.0)


def serve(port: int, registry: CollectorRegistry) -> None:
    """Expose ``registry`` on ``port`` (all interfaces) from a daemon thread; 0 does nothing.

    Raises OSError if the port is taken.
    """
    if port:
        start_http_server(port, registry=registry)
