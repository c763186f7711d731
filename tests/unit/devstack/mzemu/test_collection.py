"""The emulator's arrangement: consolidation, history, snapshots, upsert envelope."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.mzemu.collection import (
    Collection,
    Row,
    Update,
    apply_updates,
    consolidate,
    diff_multisets,
    upsert_envelope,
)


def row(key: str, value: str | None) -> Row:
    return Row((key.encode(), None if value is None else value.encode()))


_multisets = st.dictionaries(
    st.tuples(st.sampled_from("abc"), st.sampled_from(["x", "y", None])).map(lambda kv: row(*kv)),
    st.integers(1, 3),
    max_size=5,
)


@given(_multisets, _multisets)
def test_diff_turns_old_into_new_without_zero_diffs(
    old: dict[Row, int], new: dict[Row, int]
) -> None:
    updates = diff_multisets(old, new)
    assert all(u.diff != 0 for u in updates)
    assert len({u.row for u in updates}) == len(updates)
    state: Counter[Row] = Counter(old)
    apply_updates(state, updates)
    assert state == Counter(new)


def test_consolidate_sums_and_drops_cancelled_rows() -> None:
    a, b = row("a", "x"), row("b", "y")
    out = consolidate([Update(a, 1), Update(b, 1), Update(a, -1), Update(b, 2)])
    assert out == [Update(b, 3)]


_keys = st.sampled_from(["k1", "k2", "k3"])
_steps = st.lists(
    st.lists(st.tuples(_keys, st.lists(st.sampled_from(["x", "y", "z"]), max_size=2)), max_size=3),
    min_size=1,
    max_size=8,
)


@given(_steps)
def test_snapshot_at_any_retained_time_matches_the_contents_then(
    steps: list[list[tuple[str, list[str]]]],
) -> None:
    coll = Collection(lambda r: r.values[0], random.Random(0))
    coll.load([row("k1", "x")], 100)
    truth: dict[int, Counter[Row]] = {100: Counter({row("k1", "x"): 1})}
    current: dict[str, list[str]] = {"k1": ["x"]}
    ts = 100
    for step in steps:
        ts += 10
        for key, values in step:
            current[key] = values
        touched = {k for k, _ in step}
        keys = {k.encode() for k in touched}
        rows = [row(k, v) for k in touched for v in current[k]]
        updates = coll.replace(keys, rows, ts)
        assert all(u.diff for u in updates)
        truth[ts] = Counter(row(k, v) for k, vs in current.items() for v in vs)
    for t, contents in truth.items():
        snap = Counter({u.row: u.diff for u in coll.snapshot_at(t)})
        assert snap == contents
        # Replaying the later updates onto the snapshot reaches the present.
        replay: Counter[Row] = Counter(snap)
        for _, batch in coll.updates_between(t, coll.upper):
            apply_updates(replay, batch)
        assert replay == truth[ts]


def test_compaction_forgets_history() -> None:
    coll = Collection(lambda r: r.values[0])
    coll.load([row("a", "1")], 10)
    coll.replace([b"a"], [row("a", "2")], 20)
    coll.replace([b"a"], [row("a", "3")], 30)
    coll.compact(25)
    assert coll.since == 25
    assert [t for t, _ in coll.history] == [30]
    assert {u.row for u in coll.snapshot_at(25)} == {row("a", "2")}
    with pytest.raises(ValueError, match="outside the readable range"):
        coll.snapshot_at(24)
    with pytest.raises(ValueError, match="not beyond the frontier"):
        coll.replace([b"a"], [], 30)
    coll.advance(40)
    assert coll.upper == 41
    coll.compact(1000)  # never past the newest closed time
    assert coll.since == 40


def test_upsert_envelope_states() -> None:
    old, new, other = row("k", "old"), row("k", "new"), row("j", "v")
    assert upsert_envelope([Update(new, 1)], [0]) == [("upsert", (b"k",), new)]
    assert upsert_envelope([Update(old, -1)], [0]) == [("delete", (b"k",), None)]
    assert upsert_envelope([Update(new, 1), Update(old, -1)], [0]) == [("upsert", (b"k",), new)]
    assert upsert_envelope([Update(new, 1), Update(old, 1)], [0]) == [
        ("key_violation", (b"k",), None)
    ]
    assert upsert_envelope([Update(new, 2)], [0]) == [("key_violation", (b"k",), None)]
    # Sorted by key, NULL keys last.
    null = Row((None, b"v"))
    out = upsert_envelope([Update(null, 1), Update(new, 1), Update(other, 1)], [0])
    assert [k for _, k, _ in out] == [(b"j",), (b"k",), (None,)]
