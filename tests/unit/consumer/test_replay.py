"""consumer/replay.py: parsing --since, entry id arithmetic, the retention check and the
change count (pure, no services)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import encode_changes, encode_progress, encode_reconcile
from searchsync.consumer.replay import (
    SinceError,
    StreamInfo,
    count_changes,
    format_id,
    id_before,
    parse_id,
    parse_since,
    retention_problem,
)


def test_entry_id_is_a_position() -> None:
    since = parse_since("1733312345678-3")
    assert (since.kind, since.position, since.ts) == ("id", (1733312345678, 3), None)


def test_integer_is_a_materialize_ts() -> None:
    since = parse_since("1733312345678")
    assert (since.kind, since.ts, since.position) == ("ts", 1733312345678, None)


def test_iso_time_becomes_the_entry_id_of_its_millisecond() -> None:
    since = parse_since("2026-12-04T13:00:00Z")
    assert since.kind == "time"
    assert since.position == (1796389200000, 0)
    assert parse_since("2026-12-04T14:00:00.250+01:00").position == (1796389200250, 0)


@pytest.mark.parametrize(
    "text",
    ["yesterday", "1733312345", "2026-12-04T13:00:00", "1733312345678-", "-5", ""],
)
def test_bad_since_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(SinceError):
        parse_since(text)


def test_seconds_are_refused_with_a_hint() -> None:
    with pytest.raises(SinceError, match="seconds"):
        parse_since("1733312345")


@given(st.integers(1, 2**48), st.integers(0, 2**64 - 1))
def test_id_before_is_the_greatest_smaller_id(ms: int, seq: int) -> None:
    before = id_before((ms, seq))
    assert before < (ms, seq)
    # nothing fits between them
    if seq > 0:
        assert before == (ms, seq - 1)
    else:
        assert before == (ms - 1, 2**64 - 1)
    assert parse_id(format_id(before)) == before


def test_id_before_zero_is_an_error() -> None:
    with pytest.raises(ValueError):
        id_before((0, 0))


def _info(
    *, length: int, added: int, first: tuple[int, int] | None, deleted: tuple[int, int] = (0, 0)
) -> StreamInfo:
    return StreamInfo(
        length=length,
        last_generated=(5000, 0),
        first_id=first,
        last_id=(5000, 0) if length else None,
        entries_added=added,
        max_deleted=deleted,
    )


def test_nothing_ever_removed_allows_any_start() -> None:
    assert retention_problem(_info(length=10, added=10, first=(1000, 0)), (1, 0)) is None


def test_start_below_the_first_kept_entry_after_trimming_is_refused() -> None:
    problem = retention_problem(_info(length=10, added=30, first=(1000, 0)), (999, 5))
    assert problem is not None
    assert "20 entries were removed" in problem
    assert "1000-0" in problem


def test_start_at_or_after_the_first_kept_entry_is_fine() -> None:
    info = _info(length=10, added=30, first=(1000, 0), deleted=(999, 7))
    assert retention_problem(info, (1000, 0)) is None
    assert retention_problem(info, (2000, 0)) is None


def test_an_entry_deleted_by_hand_after_the_start_is_refused() -> None:
    info = _info(length=10, added=11, first=(1000, 0), deleted=(3000, 1))
    problem = retention_problem(info, (2000, 0))
    assert problem is not None and "XDEL" in problem
    assert retention_problem(info, (3000, 2)) is None


def test_an_emptied_stream_refuses() -> None:
    assert retention_problem(_info(length=0, added=4, first=None), (1, 0)) is not None


def test_changes_counted_as_the_consumer_acknowledges_them() -> None:
    entries = [
        (b"1-0", encode_changes(10, [(b"a", b"{}")])),
        (b"2-0", encode_changes(11, [(b"a", None)])),
        (b"3-0", encode_changes(12, [(b"a", b"{}"), (b"b", None), (b"c", b"{}")])),
        (b"4-0", encode_progress(13)),
        (b"5-0", encode_reconcile(13)),
        # malformed: the consumer dead-letters it and still counts its declared changes
        (b"6-0", {b"ts": b"14", b"op": b"b", b"n": b"4", b"junk": b"x"}),
        (b"7-0", {b"op": b"u"}),
    ]
    assert count_changes(entries) == 1 + 1 + 3 + 0 + 0 + 4 + 1
