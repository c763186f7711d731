"""consumer/leases.py: lease timing keeps the handover within LEASE_TTL_SECONDS."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.leases import hold_seconds, tick_seconds


def test_tick_is_a_fifth_of_the_ttl_within_bounds() -> None:
    assert tick_seconds(5.0) == 1.0
    assert tick_seconds(2.0) == 0.4
    assert tick_seconds(0.2) == 0.1
    assert tick_seconds(60.0) == 1.0


@given(st.floats(min_value=0.5, max_value=3600))
def test_handover_fits_in_the_ttl(ttl: float) -> None:
    tick, hold = tick_seconds(ttl), hold_seconds(ttl)
    # a dead consumer's lease is gone after `hold`; the next tick of a live one takes it
    assert hold + tick <= ttl + 1e-9
    # and a live consumer renews several times before its lease could lapse
    assert hold >= 3 * tick - 1e-9
