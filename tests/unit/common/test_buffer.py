"""common/buffer.py: buffer in changes, corrected by XINFO's outstanding entries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.buffer import partition_buffer


def test_counts_changes_not_entries() -> None:
    assert partition_buffer(written=1000, acked=200, outstanding_entries=4) == 800


def test_nothing_outstanding_is_empty_even_if_counters_drifted() -> None:
    assert partition_buffer(written=50, acked=10, outstanding_entries=0) == 0


def test_counter_lag_never_hides_outstanding_entries() -> None:
    assert partition_buffer(written=5, acked=5, outstanding_entries=3) == 3


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(-5, 10**6))
def test_never_negative(written: int, acked: int, outstanding: int) -> None:
    result = partition_buffer(written, acked, outstanding)
    assert result >= 0
    assert result >= max(outstanding, 0)
