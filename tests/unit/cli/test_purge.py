"""cli/purge.py's pure logic: which entries and letters carry a key, which entries the
group has acknowledged, what the plan says and what the command reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.cli.purge import (
    Done,
    Found,
    GroupState,
    Plan,
    acknowledged,
    carries,
    exit_code,
    letter_carries,
    make_plan,
    plan_lines,
    result_lines,
    result_rows,
)
from searchsync.common.entries import (
    DeadLetter,
    encode_changes,
    encode_dead_letter,
    encode_progress,
    encode_reconcile,
    raw_fields_json,
)

KEY = b"customer:42"
OTHER = b"customer:43"

keys_st = st.binary(min_size=1, max_size=12)  # any bytes, colons included
docs_st = st.one_of(st.none(), st.binary(min_size=1, max_size=20))


@given(
    changes=st.dictionaries(keys_st, docs_st, min_size=1, max_size=8),
    probe=keys_st,
)
def test_an_entry_carries_a_key_iff_the_producer_put_its_change_in_it(
    changes: dict[bytes, bytes | None], probe: bytes
) -> None:
    fields = encode_changes(7, list(changes.items()))
    others = carries(fields, probe)
    if probe in changes:
        assert others == len(changes) - 1  # the other keys' changes that go with it
    else:
        assert others is None


def test_markers_and_other_keys_entries_carry_nothing() -> None:
    assert carries(encode_progress(5), KEY) is None
    assert carries(encode_reconcile(5), KEY) is None
    assert carries(encode_changes(5, [(OTHER, b"{}")]), KEY) is None
    assert carries(encode_changes(5, [(OTHER, None)]), KEY) is None
    # a key that is a prefix of another is not that key
    assert carries(encode_changes(5, [(KEY + b"0", b"{}"), (OTHER, None)]), KEY) is None


def test_malformed_entries_that_name_the_key_count_too() -> None:
    # an upsert without its document still names the key (and may be dead-lettered later)
    assert carries({b"ts": b"x", b"op": b"u", b"key": KEY}, KEY) == 0
    # a garbled field of a batch goes with the entry: counted as another key's change
    fields = {b"ts": b"1", b"op": b"b", b"n": b"3", b"u:" + KEY: b"{}", b"junk": b"x"}
    assert carries(fields, KEY) == 1


def test_letters_of_the_key_and_whole_unreadable_batches_holding_it() -> None:
    mine = DeadLetter(ts=1, op=b"u", key=KEY, reason="r", source="p0/1-0", doc=b"{}")
    other = DeadLetter(ts=1, op=b"u", key=OTHER, reason="r", source="p0/1-0", doc=b'{"u:x":1}')
    assert letter_carries(encode_dead_letter(mine), KEY)
    assert not letter_carries(encode_dead_letter(other), KEY)
    # an entry the consumer could not split (no ts) is dead-lettered whole, without a key
    batch = {b"op": b"b", b"n": b"2", b"u:" + KEY: b"{}", b"d:" + OTHER: b""}
    whole = DeadLetter(
        ts=0, op=b"b", key=b"", reason="r", source="p0/1-0", doc=raw_fields_json(batch)
    )
    assert letter_carries(encode_dead_letter(whole), KEY)
    assert letter_carries(encode_dead_letter(whole), OTHER)
    assert not letter_carries(encode_dead_letter(whole), b"customer:44")
    garbage = DeadLetter(ts=0, op=b"b", key=b"", reason="r", source="?", doc=b"not json")
    assert not letter_carries(encode_dead_letter(garbage), KEY)


ids_st = st.tuples(st.integers(0, 2**45), st.integers(0, 2**64 - 1))


@given(
    stream=st.lists(ids_st, min_size=1, max_size=30, unique=True),
    delivered=st.integers(0, 30),
    pending_picks=st.sets(st.integers(0, 29), max_size=10),
)
def test_only_delivered_entries_below_every_pending_one_count_as_acknowledged(
    stream: list[tuple[int, int]], delivered: int, pending_picks: set[int]
) -> None:
    """A model group: the first ``delivered`` entries were delivered, some of them are
    still pending. Nothing pending or undelivered may ever count as acknowledged, and
    everything delivered below the lowest pending entry does."""
    stream.sort()
    delivered = min(delivered, len(stream))
    if delivered == 0:
        group = None  # nothing delivered: no group position to speak of
        pending: set[tuple[int, int]] = set()
    else:
        pending = {stream[i] for i in pending_picks if i < delivered}
        group = GroupState(stream[delivered - 1], min(pending) if pending else None)
    for position, entry_id in enumerate(stream):
        ok = acknowledged(entry_id, group)
        if position >= delivered or entry_id in pending:
            assert not ok
        elif not pending or entry_id < min(pending):
            assert ok


def test_acknowledged_at_the_edges() -> None:
    group = GroupState((1000, 2**64 - 1), None)  # a replay's SETID leaves such ids
    assert acknowledged((1000, 5), group)
    assert not acknowledged((1001, 0), group)
    assert acknowledged((7, 0), GroupState((7, 0), None))  # the last delivered itself
    assert not acknowledged((7, 0), GroupState((7, 0), (7, 0)))
    assert not acknowledged((1, 0), None)


def _plan() -> Plan:
    found = [
        Found("1-0", "upsert", 10, 0),
        Found("2-0", "batch", 11, 3),
        Found("5-0", "delete", 12, 0),
        Found("7-0", "batch", None, 1),
    ]
    return make_plan(
        found,
        GroupState((7, 0), (5, 0)),
        ["9-0", "9-1"],
        key="customer:42",
        partition=1,
        stream="searchsync:v:p1",
        dlq="searchsync:v:dlq",
    )


def test_the_plan_splits_by_acknowledgement_and_counts_other_keys_changes() -> None:
    plan = _plan()
    assert [f.id for f in plan.deletable] == ["1-0", "2-0"]
    assert [f.id for f in plan.kept] == ["5-0", "7-0"]
    assert plan.others == 3
    lines = plan_lines(plan)
    assert lines[0] == (
        "searchsync purge-key will delete the data of key 'customer:42' (partition p1): "
        "2 acknowledged entries of searchsync:v:p1 and 2 dead letters of searchsync:v:dlq."
    )
    assert lines[1] == (
        "  entry 2-0 (batch at ts 11) also holds 3 changes of other keys, which go with it "
        "(already indexed; searchsync replay can no longer re-send them)."
    )
    assert lines[2] == (
        "2 entries of the key are not acknowledged yet (still on the way to OpenSearch) and stay: "
        "run searchsync purge-key again later."
    )
    # a kept batch's other changes are not announced: they do not go
    assert not any("7-0" in line for line in lines)


def test_results_say_what_went_and_what_stayed() -> None:
    plan = _plan()
    done = Done(
        deleted=frozenset({"1-0"}),
        kept=frozenset({"2-0"}),  # the group moved back between plan and deletion
        letters_deleted=frozenset({"9-0"}),
        letters_gone=frozenset({"9-1"}),
    )
    entries, letters = result_rows(plan, done)
    assert [(r["id"], r["outcome"]) for r in entries] == [
        ("1-0", "deleted"),
        ("2-0", "kept"),
        ("5-0", "kept"),
        ("7-0", "kept"),
    ]
    assert [(r["id"], r["outcome"]) for r in letters] == [("9-0", "deleted"), ("9-1", "gone")]
    assert exit_code(plan, done) == 1
    lines = result_lines(plan, done)
    assert lines[-1] == (
        "deleted 1 entry and 1 letter of key 'customer:42'; 3 kept, not acknowledged yet: "
        "run searchsync purge-key again once the consumers have acknowledged them"
    )
    assert "2-0" in lines[1] and "not acknowledged yet" in lines[1]


def test_exit_codes() -> None:
    plan = _plan()
    assert exit_code(plan, None) == 1  # not confirmed
    empty = make_plan([], None, [], key="k", partition=0, stream="s", dlq="d")
    assert exit_code(empty, Done()) == 0
    assert exit_code(empty, None) == 0
    assert result_lines(empty, Done()) == ["no entries of key 'k' in s, no letters in d"]
    clean = make_plan(
        [Found("1-0", "upsert", 1, 0)],
        GroupState((1, 0), None),
        ["2-0"],
        key="k",
        partition=0,
        stream="s",
        dlq="d",
    )
    done = Done(deleted=frozenset({"1-0"}), letters_deleted=frozenset({"2-0"}))
    assert exit_code(clean, done) == 0
    assert result_lines(clean, done)[-1] == "deleted 1 entry and 1 letter of key 'k'"
    unconfirmed = result_rows(clean, None)
    assert {r["outcome"] for r in unconfirmed[0] + unconfirmed[1]} == {"not confirmed"}
