"""The producer's Prometheus metrics, on a registry the caller owns (no global state).

Served with ``/healthz`` on METRICS_HOST:METRICS_PORT by common.endpoint (0 = no
endpoint); tests and benchmarks build their own registry and read it directly.
The object also holds the process's health facts (common.health): what it
observes about Redis, Materialize and the checkpoint feeds both.

Every component records into one unconditionally: a caller that wants no metrics
passes none and the component records into :meth:`ProducerMetrics.unserved`, so
the core logic never branches on whether metrics are wanted.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from ..common.buffer import BufferReading
from ..common.health import HealthFacts

__all__ = ["LEADING_WORK", "ProducerMetrics"]

# What an active producer not paused by backpressure is expected to do (common.health).
LEADING_WORK = "holding the producer lease (the checkpoint should move)"


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
        self.replica_wait_timeouts = Counter(
            "searchsync_producer_replica_wait_timeouts",
            "Write round trips not acknowledged by REDIS_WAIT_REPLICAS replicas within "
            "REDIS_WAIT_TIMEOUT_MS (each one replayed from the checkpoint)",
            labels,
            registry=registry,
        ).labels(view)
        self.reconciles = Counter(
            "searchsync_producer_reconciles",
            "Reconcile markers written after a snapshot",
            labels,
            registry=registry,
        ).labels(view)
        self._partition_buffer = Gauge(
            "searchsync_producer_partition_buffer_size",
            "Changes of the partition written but not yet acknowledged by the consumer group",
            ["view", "partition"],
            registry=registry,
        )
        self.dead_letter_stream = Gauge(
            "searchsync_producer_dead_letter_stream_length",
            "Dead letters stored in the dead-letter stream (read or not, until retried, "
            "purged or older than DLQ_RETENTION_SECONDS)",
            labels,
            registry=registry,
        ).labels(view)
        self.leader = Gauge(
            "searchsync_producer_leader",
            "1 while this producer holds the view's producer lease (0: hot standby)",
            labels,
            registry=registry,
        ).labels(view)
        self._view = view
        self.health = HealthFacts()
        self._leading = False
        self._paused = False

    @classmethod
    def unserved(cls, view: str = "") -> ProducerMetrics:
        """Metrics on a registry of their own that nothing serves or reads: what a
        component records into when its caller passed none."""
        return cls(CollectorRegistry(), view)

    def entries(self, op: bytes, count: int = 1) -> None:
        """``count`` entries of ``op`` (common.entries: UPSERT, DELETE, BATCH, …) written."""
        self._entries.labels(self._view, op.decode()).inc(count)

    def changes(self, op: bytes, count: int) -> None:
        """``count`` changes of ``op`` (common.entries.UPSERT or DELETE) written."""
        self._changes.labels(self._view, op.decode()).inc(count)

    def set_frontier(self, frontier: int) -> None:
        """The checkpoint moved to ``frontier``: progress, and Materialize answers."""
        self._frontier_value = frontier
        self.frontier_ts.set(frontier)
        self.health.progressed()
        self.health.answered("Materialize")

    def measured(self, reading: BufferReading, *, paused: bool) -> None:
        """A buffer measurement (producer.backpressure) succeeded: Redis answers."""
        self.buffer_size.set(reading.total)
        for partition, buffer in enumerate(reading.partitions):
            self._partition_buffer.labels(self._view, str(partition)).set(buffer)
        self.dead_letter_stream.set(reading.dead_letters)
        self.backpressure.set(1 if paused else 0)
        self.health.answered("Redis")
        if paused != self._paused:
            self._paused = paused
            self._expect_progress()

    def lead(self, leading: bool) -> None:
        """The producer lease was won (True) or lost or given up (False)."""
        self.leader.set(1 if leading else 0)
        self._leading = leading
        self._expect_progress()

    def session_failed(self, error: BaseException, description: str) -> None:
        """A session failed and will be retried: Redis's fault or Materialize's."""
        self.reconnects.inc()
        dependency = "Redis" if isinstance(error, RedisError) else "Materialize"
        self.health.failed(dependency, description)

    def _expect_progress(self) -> None:
        self.health.waiting(LEADING_WORK if self._leading and not self._paused else "")

    def _lag(self) -> float:
        if not self._frontier_value:
            return 0.0
        return max(0.0, time.time() - self._frontier_value / 1000.0)
