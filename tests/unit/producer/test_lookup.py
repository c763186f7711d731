"""producer/lookup.py: a subscription's first rows folded into its snapshot at AS OF."""

from __future__ import annotations

import pytest

from searchsync.producer.lookup import SnapshotFold, lookup_statement
from searchsync.producer.rows import Progress


def test_the_snapshot_is_the_rows_at_as_of_and_ends_at_the_next_progress() -> None:
    fold = SnapshotFold()
    assert not fold.add([Progress(100), (100, "a", 1, ("a", 1)), (100, "b", 1, ("b", 1))])
    assert not fold.add([(100, "b", 1, ("b", 2)), Progress(100)])  # b has two rows
    # a change after the read is not part of it, nor is anything after completion
    assert fold.add([(101, "a", -1, ("a", 1)), Progress(102), (102, "c", 1, ("c", 1))])
    assert fold.as_of == 100 and fold.complete
    assert fold.live_rows("a") == [("a", 1)]
    assert sorted(fold.live_rows("b")) == [("b", 1), ("b", 2)]
    assert fold.live_rows("c") == []


def test_multiplicities_count_and_without_an_opening_progress_the_first_row_says_as_of() -> None:
    fold = SnapshotFold()
    fold.add([(7, "a", 2, ("a",)), (7, "z", 1, ("z",)), (7, "z", -1, ("z",)), Progress(8)])
    assert fold.as_of == 7 and fold.complete
    assert fold.live_rows("a") == [("a",), ("a",)]
    assert fold.live_rows("z") == []


def test_an_empty_snapshot_is_complete_at_the_second_progress() -> None:
    fold = SnapshotFold()
    assert not fold.add([Progress(5)])
    assert fold.add([Progress(6)])
    assert fold.as_of == 5 and fold.counts == {}


def test_the_statement_quotes_keys_and_names() -> None:
    text = lookup_statement("my view", "key", ["a", "it's"]).as_string(None)
    assert text == (
        'DECLARE "searchsync_lookup" CURSOR FOR SUBSCRIBE (SELECT * FROM "my view" '
        "WHERE \"key\" IN ('a', 'it''s')) WITH (PROGRESS, SNAPSHOT = true)"
    )
    with pytest.raises(ValueError, match="at least one key"):
        lookup_statement("v", "k", [])
