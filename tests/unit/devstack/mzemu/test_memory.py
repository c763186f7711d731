"""The emulator's memory report: structures sized by walking them, shared values split."""

from __future__ import annotations

import sys

import pytest

from devstack.mzemu.collection import Collection, Row
from devstack.mzemu.config import ConfigError, load_config
from devstack.mzemu.memory import tally_view


def blob(char: str, n: int) -> bytes:
    # made at run time: a constant would carry the code object's reference too
    return (char * n).encode()


def test_a_replaced_row_is_counted_once_and_shared_values_are_split() -> None:
    coll = Collection(lambda row: row.values[0])
    coll.load([Row((blob("k", 20), blob("s", 300), blob("a", 100)))], ts=1)
    old = next(iter(coll.by_key[blob("k", 20)]))
    # as a made-up change does: every column but one shared with the row it replaces
    new = Row((old.values[0], old.values[1], blob("b", 200)))
    coll.replace([old.values[0]], [new], ts=2)
    size = sys.getsizeof
    key, shared, old_only = (size(v) for v in old.values)  # sizes: no references held
    new_only = size(new.values[2])
    del old, new

    tally, counts = tally_view(coll, queues=[])

    assert counts == {
        "keys": 1, "rows": 1, "history_times": 1, "history_updates": 2,
        "queued_events": 0, "distinct_rows": 2,
    }  # fmt: skip
    assert tally.count["rows only the history holds: column values (bytes)"] == 1
    # the key is held by both rows and the index (a third each), the shared column by
    # both rows (half each), the changed columns by one row each
    assert tally.size["view rows: column values (bytes)"] == pytest.approx(
        key / 3 + shared / 2 + new_only
    )
    assert tally.size["rows only the history holds: column values (bytes)"] == pytest.approx(
        key / 3 + shared / 2 + old_only
    )


def test_queued_rows_not_in_the_view_or_history_are_their_own_line() -> None:
    coll = Collection(lambda row: row.values[0])
    coll.load([], ts=1)
    gone = Row((blob("g", 10), blob("x", 50)))
    tally, counts = tally_view(coll, queues=[[[(0, 1, 1, gone)]]])
    assert counts["queued_events"] == 1
    assert tally.count["rows only the queues hold: column values (bytes)"] == 1


def test_the_report_is_off_unless_a_path_is_given() -> None:
    assert load_config({}).tracemalloc_path == ""
    config = load_config({"MZEMU_TRACEMALLOC": "/tmp/m.json", "MZEMU_TRACEMALLOC_FRAMES": "0"})
    assert (config.tracemalloc_path, config.tracemalloc_frames) == ("/tmp/m.json", 0)
    with pytest.raises(ConfigError, match="MZEMU_TRACEMALLOC_FRAMES"):
        load_config({"MZEMU_TRACEMALLOC_FRAMES": "many"})
