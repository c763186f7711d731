"""common/backoff.py: the runbook's 1s → 30s exponential policy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.backoff import Backoff


def test_runbook_sequence() -> None:
    backoff = Backoff(initial=1, maximum=30, multiplier=2)
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


@given(st.floats(0.01, 10), st.floats(0.01, 100), st.floats(1, 5), st.integers(1, 50))
def test_never_exceeds_max_and_never_shrinks(
    initial: float, maximum: float, multiplier: float, n: int
) -> None:
    backoff = Backoff(initial=initial, maximum=maximum, multiplier=multiplier)
    delays = [backoff.next_delay() for _ in range(n)]
    assert all(d <= maximum for d in delays)
    assert delays == sorted(delays)
