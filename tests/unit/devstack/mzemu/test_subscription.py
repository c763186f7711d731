"""Subscription delivery rules: opening sequence, UP TO, buffering budget, FETCH taking."""

from __future__ import annotations

import random

import pytest

from devstack.mzemu.collection import Collection, Row, Update
from devstack.mzemu.errors import MzError
from devstack.mzemu.output import DATA, PROGRESS, UPSERT, OutputLayout
from devstack.mzemu.subscription import MESSAGE_OVERHEAD_BYTES, SubscribeSpec, Subscription
from devstack.mzemu.wire import ColumnDesc

COLUMNS = (ColumnDesc("order_id", 25), ColumnDesc("status", 25))


def row(key: str, status: str) -> Row:
    return Row((key.encode(), status.encode()))


def collection() -> Collection:
    coll = Collection(lambda r: r.values[0], random.Random(1))
    coll.load([row("o1", "placed"), row("o2", "placed")], 100)
    coll.replace([b"o1"], [row("o1", "picking")], 110)
    coll.advance(120)
    return coll


def make(spec: SubscribeSpec, budget: int = 1 << 30, upsert: bool = False) -> Subscription:
    layout = OutputLayout(COLUMNS, spec.progress, (0,) if upsert else None)
    return Subscription(layout, spec, budget)


def test_opening_sequence_with_snapshot_and_progress() -> None:
    sub = make(SubscribeSpec(120, None, snapshot=True, progress=True))
    sub.activate(collection())
    events = sub.take(None)
    assert events[0] == (PROGRESS, 120)
    assert sorted((e[1], e[2], e[3].values[1]) for e in events[1:-1]) == [
        (120, 1, b"picking"),
        (120, 1, b"placed"),
    ]
    assert events[-1] == (PROGRESS, 121)
    assert sub.take(None) == []


def test_history_replay_and_snapshot_false() -> None:
    sub = make(SubscribeSpec(105, None, snapshot=False, progress=True))
    sub.activate(collection())
    events = sub.take(None)
    data = [e for e in events if e[0] == DATA]
    assert sorted((e[1], e[2]) for e in data) == [(110, -1), (110, 1)]
    assert events[0] == (PROGRESS, 105) and events[-1] == (PROGRESS, 121)
    snap = make(SubscribeSpec(105, None, snapshot=True, progress=False))
    snap.activate(collection())
    rows = snap.take(None)
    assert sorted((e[1], e[2], e[3].values[1]) for e in rows) == [
        (105, 1, b"placed"),
        (105, 1, b"placed"),
        (110, -1, b"placed"),
        (110, 1, b"picking"),
    ]


def test_ticks_and_up_to_end_without_a_final_progress_row() -> None:
    sub = make(SubscribeSpec(120, 131, snapshot=False, progress=True))
    sub.activate(collection())
    sub.take(None)
    sub.on_tick(125, [Update(row("o2", "gone"), 1)], 126)
    sub.on_tick(131, [Update(row("o2", "late"), 1)], 132)
    events = sub.take(None)
    assert [e[0] for e in events] == [DATA, PROGRESS]
    assert events[1] == (PROGRESS, 126)
    assert sub.finished()


def test_take_splits_messages_and_counts_rows() -> None:
    sub = make(SubscribeSpec(120, None, snapshot=True, progress=True))
    sub.activate(collection())
    assert len(sub.take(2)) == 2
    assert len(sub.take(1)) == 1
    assert sub.take(5) == [(PROGRESS, 121)]
    assert not sub.ready()


def test_backlog_beyond_budget_retires_after_the_queued_rows() -> None:
    sub = make(SubscribeSpec(120, None, snapshot=False, progress=True), budget=3 * 1024)
    sub.activate(collection())
    for ts in range(121, 126):
        sub.on_tick(ts, [], ts + 1)
    assert sub.done
    rows = sub.take(None)
    assert all(e[0] == PROGRESS for e in rows) and rows
    with pytest.raises(MzError) as info:
        sub.take(None)
    assert info.value.sqlstate == "53200"
    assert info.value.message.endswith("exceeding the 3.0 KiB budget")


def big_snapshot() -> Collection:
    """100 rows of ~50 bytes at ts 120: about 5 KiB in one snapshot message."""
    big = Collection(lambda r: r.values[0])
    big.load([row(f"o{i}", "x" * 50) for i in range(100)], 120)
    return big


def test_one_large_message_being_drained_is_tolerated() -> None:
    sub = make(SubscribeSpec(120, None, snapshot=True, progress=False), budget=100)
    sub.activate(big_snapshot())
    assert not sub.done
    assert sub.backlog_bytes() == 0
    assert len(sub.take(None)) == 100


def test_a_large_snapshot_behind_the_opening_progress_row_is_delivered() -> None:
    # Materialize queues the progress row at AS OF when the subscribe starts and the
    # snapshot when compute has it; the FETCH that started it takes the row first, so
    # the snapshot is the message being drained. A resume whose snapshot holds one row
    # above the budget (tests/e2e/test_size_limits.py's 120 MB order) was retired at
    # every attempt.
    sub = make(SubscribeSpec(120, None, snapshot=True, progress=True), budget=2048)
    sub.activate(big_snapshot())
    assert not sub.done
    events = sub.take(None)
    assert events[0] == (PROGRESS, 120) and events[-1] == (PROGRESS, 121)
    assert len(events) == 102
    # a tick queued behind an undrained message still counts
    sub.on_tick(121, [Update(row("o1", "y" * 200), 1)], 122)
    sub.on_tick(122, [Update(row("o2", "y" * 200), 1)], 123)
    assert sub.done


def test_retire_delivers_queued_rows_first() -> None:
    sub = make(SubscribeSpec(120, None, snapshot=True, progress=False))
    sub.activate(collection())
    sub.retire(MzError("XX000", "dropped"))
    assert len(sub.take(None)) == 2
    with pytest.raises(MzError, match="dropped"):
        sub.take(None)
    assert sub.backlog_bytes() <= MESSAGE_OVERHEAD_BYTES


def test_upsert_events() -> None:
    sub = make(SubscribeSpec(105, None, snapshot=True, progress=False), upsert=True)
    sub.activate(collection())
    events = sub.take(None)
    assert [(e[0], e[1], e[2], e[3]) for e in events] == [
        (UPSERT, 105, "upsert", (b"o1",)),
        (UPSERT, 105, "upsert", (b"o2",)),
        (UPSERT, 110, "upsert", (b"o1",)),
    ]
    assert events[2][4].values[1] == b"picking"
