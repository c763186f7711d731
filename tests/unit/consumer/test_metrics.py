"""consumer/metrics.py: the runbook's metric names, on a registry the caller owns.

The latency histogram takes a count per observation; it must expose exactly what
prometheus_client's own Histogram would after that many observe() calls.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from searchsync.consumer.metrics import (
    ERROR_KINDS,
    LATENCY_BUCKETS,
    ConsumerMetrics,
    WeightedHistogram,
)
from searchsync.consumer.outcomes import Blocked


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
    assert second.get_sample_value("opensearch_sync_events_total", {"op": "upsert"}) == 0


def test_every_op_and_error_kind_is_exported_at_zero_before_it_happens() -> None:
    """So rate(opensearch_sync_errors_total[5m]) has data before the first error."""
    registry = CollectorRegistry()
    ConsumerMetrics(registry, "a")
    for op in ("upsert", "delete"):
        assert registry.get_sample_value("opensearch_sync_events_total", {"op": op}) == 0
    for kind in ERROR_KINDS:
        assert registry.get_sample_value("opensearch_sync_errors_total", {"kind": kind}) == 0
    assert {b.value for b in Blocked} <= set(ERROR_KINDS)


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([0.0, *LATENCY_BUCKETS]),  # exactly on a bound: le is inclusive
                st.floats(0, 4000, allow_nan=False),
            ),
            st.integers(0, 300),
        ),
        max_size=20,
    )
)
def test_weighted_observe_exposes_what_a_histogram_would(
    observations: list[tuple[float, int]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    weighted = WeightedHistogram("lat", "age", LATENCY_BUCKETS, ours)
    plain = Histogram("lat", "age", buckets=LATENCY_BUCKETS, registry=theirs)
    for value, count in observations:
        weighted.observe(value, count)
        for _ in range(count):
            plain.observe(value)
    mine, reference = _exposition(ours), _exposition(theirs)
    # same lines; _sum may differ in the last bits (v*n against n additions of v)
    assert [line for line in mine if "_sum" not in line] == [
        line for line in reference if "_sum" not in line
    ]
    (mine_sum,) = [float(line.split()[-1]) for line in mine if line.startswith("lat_sum")]
    (ref_sum,) = [float(line.split()[-1]) for line in reference if line.startswith("lat_sum")]
    assert mine_sum == pytest.approx(ref_sum, rel=1e-9, abs=1e-9)


def test_latency_name_clash_is_refused_like_any_metric() -> None:
    registry = CollectorRegistry()
    ConsumerMetrics(registry, "a")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("opensearch_sync_latency_seconds", "again", registry=registry)
