"""common/buffer.py: buffer in changes; XINFO says whether anything is outstanding."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.buffer import partition_buffer


def test_counts_changes_not_entries() -> None:
    assert partition_buffer(written=1000, acked=200, pending=4, lag=0) == 800
    assert partition_buffer(written=1000, acked=200, pending=0, lag=3) == 800


def test_nothing_outstanding_is_empty_even_if_counters_drifted() -> None:
    assert partition_buffer(written=50, acked=10, pending=0, lag=0) == 0


def test_counter_lag_never_hides_pending_entries() -> None:
    assert partition_buffer(written=5, acked=5, pending=3, lag=0) == 3


def test_a_phantom_lag_after_a_redis_restart_adds_nothing() -> None:
    # Redis 7.0 after an AOF rewrite and a restart: lag 700, all of it delivered and acked
    assert partition_buffer(written=1000, acked=1000, pending=0, lag=700) == 0


def test_an_unknown_lag_leaves_it_to_the_counters() -> None:
    assert partition_buffer(written=10, acked=4, pending=0, lag=None) == 6


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_never_negative_and_never_below_pending(
    written: int, acked: int, pending: int, lag: int | None
) -> None:
    result = partition_buffer(written, acked, pending, lag)
    assert result >= pending >= 0
