"""common/backoff.py: the runbook's 1s → 30s exponential policy, jittered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.backoff import Backoff


def fixed(value: float) -> Backoff:
    return Backoff(initial=1, maximum=30, multiplier=2, uniform=lambda: value)


def test_runbook_sequence_without_jitter_draw() -> None:
    backoff = fixed(0.0)  # the top of each jitter range: the nominal delays
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_jitter_takes_the_upper_half_of_each_delay() -> None:
    low = fixed(0.999999)
    assert [round(low.next_delay(), 3) for _ in range(6)] == [0.5, 1, 2, 4, 8, 15]


def test_runners_that_fail_together_do_not_retry_together() -> None:
    # eight partition runners meeting the same 429 at the same moment, with the real
    # randomness: without jitter they would all wait exactly 1 s and collide again
    delays = [Backoff.from_settings(1, 30, 2).next_delay() for _ in range(8)]
    assert len(set(delays)) == 8
    assert all(0.5 <= delay <= 1 for delay in delays)


@given(
    st.floats(0.01, 10),
    st.floats(0.01, 100),
    st.floats(1, 5),
    st.integers(1, 50),
    st.floats(0, 0.999999),
)
def test_never_exceeds_max_nor_falls_below_half_the_nominal(
    initial: float, maximum: float, multiplier: float, n: int, draw: float
) -> None:
    backoff = Backoff(initial=initial, maximum=maximum, multiplier=multiplier, uniform=lambda: draw)
    for _ in range(n):
        nominal = backoff.nominal()
        delay = backoff.next_delay()
        assert nominal / 2 <= delay <= min(nominal, maximum)
