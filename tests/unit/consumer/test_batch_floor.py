"""consumer/batch.py: changes below the snapshot floor are superseded, never sent or lettered.

The floor is the highest reconcile marker the partition has settled (read at the
takeover) and rises with every marker added, for the entries after it (stream order).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import Change, encode_changes, encode_progress, encode_reconcile
from searchsync.consumer.batch import Batch, RawEntry, floor_of

KEYS = [b"k1", b"k2", b"k3"]

# one step of a stream: a reconcile marker, a progress entry, or changes (key -> doc or None)
Step = tuple[str, int, dict[bytes, bytes | None]]

steps = st.lists(
    st.tuples(
        st.sampled_from(["changes", "changes", "reconcile", "progress"]),
        st.integers(0, 60),
        st.dictionaries(
            st.sampled_from(KEYS), st.one_of(st.none(), st.just(b'{"x":1}')), min_size=1
        ),
    ),
    min_size=1,
    max_size=20,
)


def raw(n: int, fields: dict[bytes, bytes], attempts: int = 0) -> RawEntry:
    return RawEntry(f"1-{n}".encode(), fields, attempts)


def fields_of(kind: str, ts: int, changes: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    if kind == "reconcile":
        return encode_reconcile(ts)
    if kind == "progress":
        return encode_progress(ts)
    return encode_changes(ts, list(changes.items()))


@given(steps, st.one_of(st.none(), st.integers(0, 60)), st.integers(0, 3))
def test_a_change_below_the_floor_in_force_is_settled_unsent(
    stream: list[Step], start: int | None, attempts: int
) -> None:
    batch = Batch(partition=0, max_deliveries=5, started=0.0, floor=start)
    floor, below = start, 0
    newest: dict[bytes, Change] = {}
    for n, (kind, ts, changes) in enumerate(stream):
        batch.add(raw(n, fields_of(kind, ts, changes), attempts))
        if kind == "reconcile":
            floor = ts if floor is None else max(floor, ts)
        elif kind == "changes":
            for key, doc in changes.items():
                if floor is not None and ts < floor:
                    below += 1
                elif key not in newest or newest[key].ts <= ts:
                    newest[key] = Change(ts, key, doc)
    assert {item.change.key: item.change for item in batch.items()} == newest
    assert batch.below_floor == below
    assert batch.floor == floor
    assert batch.letters == []  # superseded, never dead-lettered
    # once what is sent settles, every entry is acknowledged, the skipped ones included
    for item in batch.items():
        batch.settle(item)
    assert batch.done()
    assert len(batch.take_settled()) == len(stream)


def test_the_marker_raises_the_floor_for_what_follows_it_only() -> None:
    batch = Batch(partition=0, max_deliveries=5, started=0.0)
    batch.add(raw(0, encode_changes(1000, [(b"before", b"{}")])))  # a snapshot row's peer
    batch.add(raw(1, encode_reconcile(3000)))
    batch.add(raw(2, encode_changes(1000, [(b"zombie", b"{}"), (b"gone", None)])))
    batch.add(raw(3, encode_changes(3000, [(b"at", b"{}")])))  # at T: not below it
    assert sorted(item.change.key for item in batch.items()) == [b"at", b"before"]
    assert (batch.superseded_upserts, batch.superseded_deletes, batch.below_floor) == (1, 1, 2)
    assert [state.open for state in batch.entries] == [1, 0, 0, 1]


def test_without_a_floor_every_ts_is_sent() -> None:
    batch = Batch(partition=0, max_deliveries=5, started=0.0)
    batch.add(raw(0, encode_changes(-1, [(b"k", b"{}")])))  # hand-written: OpenSearch refuses it
    assert [item.change.ts for item in batch.items()] == [-1]


def test_a_change_below_the_floor_attempted_too_often_is_not_dead_lettered() -> None:
    batch = Batch(partition=0, max_deliveries=2, started=0.0, floor=3000)
    batch.add(raw(0, encode_changes(1000, [(b"k", b"{}")]), attempts=7))
    assert batch.letters == [] and batch.items() == []
    assert batch.done()


def test_the_floor_to_store_is_the_highest_marker_acknowledged() -> None:
    batch = Batch(partition=0, max_deliveries=5, started=0.0)
    batch.add(raw(0, encode_reconcile(3000)))
    batch.add(raw(1, encode_progress(5000)))
    batch.add(raw(2, encode_reconcile(2000)))  # an old marker read again: never lowers
    batch.add(raw(3, encode_changes(4000, [(b"k", b"{}")])))
    first = batch.take_settled()
    assert floor_of(first) == 3000
    assert batch.floor == 3000
    batch.settle(batch.items()[0])
    assert floor_of(batch.take_settled()) is None  # no marker left to acknowledge
