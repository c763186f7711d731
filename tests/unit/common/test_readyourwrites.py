"""common/readyourwrites.py: when a ts counts as applied and searchable (pure, no services)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.readyourwrites import (
    Behind,
    CopyRefresh,
    force_after,
    frontier_behind,
    parse_interval,
    refresh_covered,
)


def test_a_frontier_covers_only_what_is_below_it() -> None:
    # applied F: every change below F is indexed, so ts is covered once F > ts
    assert frontier_behind({0: 101, 1: 500}, 2, 100) == []
    assert frontier_behind({0: 100, 1: 500}, 2, 100) == [Behind(0, 100, 1)]


def test_a_partition_without_a_frontier_is_behind() -> None:
    assert frontier_behind({0: 200}, 3, 100) == [Behind(1, None, None), Behind(2, None, None)]


@given(st.dictionaries(st.integers(0, 7), st.integers(0, 10**6)), st.integers(0, 10**6))
def test_behind_lists_exactly_the_partitions_not_above_ts(applied: dict[int, int], ts: int) -> None:
    behind = frontier_behind(applied, 8, ts)
    assert [b.partition for b in behind] == [
        n for n in range(8) if applied.get(n) is None or applied[n] <= ts
    ]
    assert all(b.behind_ms is None or b.behind_ms >= 1 for b in behind)


R = CopyRefresh
APPLIED = 100.0  # monotonic seconds when the frontier was seen


def test_two_finished_refreshes_cover() -> None:
    # the second started after the first ended, which was after the frontier
    before = {"i/0/n": R(10, 50), "i/1/n": R(4, 9)}
    now = {"i/0/n": R(12, 60), "i/1/n": R(6, 12)}
    assert refresh_covered(before, now, dict.fromkeys(before, APPLIED), APPLIED)


def test_one_refresh_in_flight_at_the_frontier_is_not_enough() -> None:
    # finished after a poll sent 0.05 s after the frontier, but took 0.2 s:
    # it may have started before the documents were in
    before = {"i/0/n": R(10, 1000)}
    now = {"i/0/n": R(11, 1200)}
    assert not refresh_covered(before, now, {"i/0/n": APPLIED + 0.05}, APPLIED)


def test_one_refresh_that_started_after_the_frontier_covers() -> None:
    # the old count was still seen 1 s after the frontier; the refresh took 20 ms
    before = {"i/0/n": R(10, 1000)}
    now = {"i/0/n": R(11, 1020)}
    assert refresh_covered(before, now, {"i/0/n": APPLIED + 1.0}, APPLIED)


def test_nothing_finished_is_not_covered() -> None:
    before = {"i/0/n": R(10, 1000)}
    assert not refresh_covered(before, dict(before), {"i/0/n": APPLIED + 9}, APPLIED)


def test_every_copy_must_be_covered() -> None:
    before = {"i/0/a": R(1, 0), "i/0/b": R(1, 0)}
    now = {"i/0/a": R(3, 2), "i/0/b": R(1, 0)}
    assert not refresh_covered(before, now, dict.fromkeys(before, APPLIED), APPLIED)


def test_a_copy_that_vanished_is_not_covered() -> None:
    before = {"i/0/a": R(1, 0)}
    assert not refresh_covered(before, {"i/0/b": R(9, 9)}, {"i/0/a": APPLIED}, APPLIED)


def test_a_new_copy_does_not_block() -> None:
    before = {"i/0/a": R(1, 0)}
    now = {"i/0/a": R(3, 2), "i/0/b": R(0, 0)}
    assert refresh_covered(before, now, {"i/0/a": APPLIED}, APPLIED)


@given(st.integers(0, 5), st.integers(0, 500), st.floats(0, 2))
def test_a_single_refresh_counts_only_if_it_surely_started_later(
    extra: int, took_ms: int, seen_after: float
) -> None:
    before = {"c": R(7, 100)}
    now = {"c": R(7 + extra, 100 + took_ms)}
    covered = refresh_covered(before, now, {"c": APPLIED + seen_after}, APPLIED)
    if extra == 0:
        assert not covered
    elif extra >= 2:
        assert covered
    else:
        assert covered == (seen_after - (took_ms + 1) / 1000 >= 0)


def test_force_after_waits_one_interval_and_a_few_refreshes() -> None:
    assert force_after(1.0, 0.01) == pytest.approx(1.25)
    assert force_after(5.0, 0.5) == pytest.approx(6.5)
    assert force_after(-1.0, 0.5) == 0.0  # no schedule: nothing else will refresh it


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("-1", -1.0), ("0", 0.0)],
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == pytest.approx(seconds)


def test_parse_interval_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_interval("soon")
