"""consumer/reconcile.py: a reconcile is due only once every partition applied beyond T."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.bulk import ItemResult
from searchsync.consumer.reconcile import delete_body, due_snapshots, tally


def test_due_when_every_partition_is_beyond() -> None:
    pending = {b"100": b"pending", b"50": b"done", b"150": b"pending"}
    applied = {b"p0": b"120", b"p1": b"101"}
    assert due_snapshots(pending, applied, 2) == [100]


def test_not_due_at_the_snapshot_ts_itself() -> None:
    # applied = 100 means only changes below 100 are in: the snapshot rows at 100 may not be
    assert due_snapshots({b"100": b"pending"}, {b"p0": b"100"}, 1) == []


def test_a_partition_without_frontier_holds_everything_back() -> None:
    assert due_snapshots({b"100": b"pending"}, {b"p0": b"500"}, 2) == []


@given(
    st.dictionaries(st.integers(1, 1000), st.sampled_from([b"pending", b"done"]), max_size=8),
    st.lists(st.integers(0, 1200), min_size=1, max_size=6),
)
def test_due_is_pending_and_below_every_frontier(
    states: dict[int, bytes], frontiers: list[int]
) -> None:
    reconcile = {str(ts).encode(): state for ts, state in states.items()}
    applied = {f"p{n}".encode(): str(f).encode() for n, f in enumerate(frontiers)}
    due = due_snapshots(reconcile, applied, len(frontiers))
    assert due == sorted(due)
    assert set(due) == {ts for ts, s in states.items() if s == b"pending" and min(frontiers) > ts}


def test_the_deletes_carry_the_snapshot_ts_as_external_version() -> None:
    body = delete_body([("orders_v1", "a"), ("orders_v2", 'q"b')], 2000)
    assert body == (
        b'{"delete":{"_index":"orders_v1","_id":"a","version":2000,"version_type":"external"}}\n'
        b'{"delete":{"_index":"orders_v2","_id":"q\\"b","version":2000,'
        b'"version_type":"external"}}\n'
    )


def test_tally_skips_conflicts_and_not_found_and_stops_at_a_failure() -> None:
    ok, gone, newer = ItemResult(200), ItemResult(404), ItemResult(409, "version_conflict")
    assert tally([ok, gone, newer, ok]) == (2, [1, 2], None)
    busy = ItemResult(429, "es_rejected_execution_exception")
    assert tally([ok, busy, ok]) == (1, [], busy)
