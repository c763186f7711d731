"""consumer/retention.py: the trim floor never passes an unacknowledged or young entry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.retention import parse_id, trim_floor

ids = st.tuples(st.integers(0, 2**44), st.integers(0, 50))


def test_parse_id() -> None:
    assert parse_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_id("5") == (5, 0)


@given(st.integers(0, 2**44), st.integers(1, 10**6), ids, st.one_of(st.none(), ids))
def test_floor_keeps_unacked_and_young_entries(
    now_ms: int, retention_s: int, last: tuple[int, int], pending: tuple[int, int] | None
) -> None:
    floor = trim_floor(now_ms, retention_s, last, pending)
    if floor is None:
        return
    # every entry below the floor is acknowledged (not pending, already delivered) ...
    if pending is not None:
        assert floor <= pending
    assert floor <= (last[0], last[1] + 1)
    # ... and older than the retention
    assert floor <= (now_ms - retention_s * 1000, 0)


def test_nothing_trimmed_while_everything_is_young() -> None:
    assert trim_floor(10_000, 60, (9_000, 0), None) is None


def test_floor_is_the_retention_cut_when_all_is_acked() -> None:
    day = 86_400
    now = 10 * day * 1000
    assert trim_floor(now, day, (now - 5, 0), None) == (now - day * 1000, 0)


def test_floor_stops_at_the_oldest_pending_entry() -> None:
    day = 86_400
    now = 10 * day * 1000
    assert trim_floor(now, day, (now - 5, 0), (1000, 2)) == (1000, 2)
    assert trim_floor(now, day, (2000, 7), None) == (2000, 8)
