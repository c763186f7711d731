"""consumer/batch.py: superseding inside a batch, dead letters before sending, settlement."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import Change, encode_changes, encode_progress, encode_reconcile
from searchsync.consumer.batch import (
    Batch,
    Item,
    RawEntry,
    chunked,
    entries_to_read,
    item_bytes,
    should_flush,
)

Stream = list[tuple[int, dict[bytes, bytes | None]]]
KEYS = [b"order:FM-1", b"order:FM-2", b"order:FM-3", b"order:FM-4"]


def raw(n: int, fields: dict[bytes, bytes], attempts: int = 0) -> RawEntry:
    return RawEntry(f"1-{n}".encode(), fields, attempts)


# one entry = a ts and 1..4 distinct keys, each an upsert or a delete
entry_changes = st.dictionaries(
    st.sampled_from(KEYS), st.one_of(st.none(), st.just(b'{"x":1}')), min_size=1, max_size=4
)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    steps = draw(st.lists(st.tuples(st.integers(0, 3), entry_changes), min_size=1, max_size=25))
    ts, out = 100, []
    for step, changes in steps:
        ts += step  # non-decreasing, as the producer writes them
        out.append((ts, changes))
    return out


@given(streams())
def test_only_the_newest_change_per_key_is_sent(
    stream: list[tuple[int, dict[bytes, bytes | None]]],
) -> None:
    batch = Batch(partition=0, max_deliveries=5, started=0.0)
    newest: dict[bytes, Change] = {}
    for n, (ts, changes) in enumerate(stream):
        batch.add(raw(n, encode_changes(ts, list(changes.items()))))
        for key, doc in changes.items():
            newest[key] = Change(ts, key, doc)  # later entry wins a tie
    assert {item.change.key: item.change for item in batch.items()} == newest
    assert batch.changes == sum(len(changes) for _, changes in stream)
    superseded = batch.superseded_upserts + batch.superseded_deletes
    assert superseded == batch.changes - len(newest)


@given(streams())
def test_every_entry_is_settled_exactly_once(
    stream: list[tuple[int, dict[bytes, bytes | None]]],
) -> None:
    batch = Batch(partition=2, max_deliveries=5, started=0.0)
    for n, (ts, changes) in enumerate(stream):
        batch.add(raw(n, encode_changes(ts, list(changes.items()))))
    assert sum(e.open for e in batch.entries) == len(batch.items())
    early = batch.take_settled()  # entries whose changes were all superseded
    for item in batch.items():
        batch.settle(item)
    late = batch.take_settled()
    assert sorted(e.id for e in early + late) == sorted(e.id for e in batch.entries)
    assert batch.done()
    assert batch.take_settled() == []


def test_markers_are_settled_and_tracked() -> None:
    batch = Batch(partition=1, max_deliveries=5, started=0.0)
    batch.add(raw(0, encode_progress(50)))
    batch.add(raw(1, encode_reconcile(40)))
    batch.add(raw(2, encode_progress(70)))
    batch.add(raw(3, encode_reconcile(60)))
    assert batch.progress_ts == 70
    # the pending check before writing applied looks below the last progress entry
    assert batch.progress_id == b"1-2"
    assert batch.reconcile_ts == [40, 60]
    assert batch.changes == 0 and batch.done()
    assert [e.id for e in batch.take_settled()] == [b"1-0", b"1-1", b"1-2", b"1-3"]


def test_a_batch_without_progress_has_no_frontier() -> None:
    batch = Batch(partition=1, max_deliveries=5, started=0.0)
    batch.add(raw(0, encode_changes(5, [(b"order:FM-1", b'{"x":1}')])))
    batch.add(raw(1, encode_reconcile(4)))
    assert batch.progress_ts is None and batch.progress_id is None


def test_malformed_entry_becomes_a_letter() -> None:
    batch = Batch(partition=3, max_deliveries=5, started=0.0)
    batch.add(raw(0, {b"ts": b"9", b"op": b"u", b"key": b"k"}))  # upsert without doc
    batch.add(raw(1, {b"op": b"zz"}))
    letters = batch.take_letters()
    assert [letter.source for letter in letters] == ["p3/1-0", "p3/1-1"]
    assert "no doc" in letters[0].reason and letters[0].key == b"k" and letters[0].ts == 9
    assert letters[0].reason.startswith("malformed entry")
    assert batch.changes == 1  # the u entry counts one change, the unknown op none
    assert batch.done()


def test_an_entry_attempted_max_deliveries_times_is_dead_lettered_without_sending() -> None:
    batch = Batch(partition=0, max_deliveries=3, started=0.0)
    batch.add(raw(0, encode_changes(5, [(b"a", b"{}"), (b"b", None)]), attempts=3))
    batch.add(raw(1, encode_changes(6, [(b"c", b"{}")]), attempts=2))
    letters = batch.take_letters()
    assert {letter.key for letter in letters} == {b"a", b"b"}
    assert all("attempted 3 times" in letter.reason for letter in letters)
    assert all(letter.deliveries == 3 for letter in letters)
    (item,) = batch.items()
    assert item.change.key == b"c" and item.deliveries == 3  # its third attempt
    assert [e.id for e in batch.take_settled()] == [b"1-0"]


def test_unsendable_document_is_dead_lettered() -> None:
    batch = Batch(partition=0, max_deliveries=3, started=0.0)
    batch.add(raw(0, encode_changes(5, [(b"a", b'{"x":"\n"}')])))
    (letter,) = batch.take_letters()
    assert "newline" in letter.reason and letter.doc == b'{"x":"\n"}'
    assert batch.items() == []


def test_older_change_behind_a_newer_one_is_superseded() -> None:
    batch = Batch(partition=0, max_deliveries=3, started=0.0)
    batch.add(raw(0, encode_changes(9, [(b"a", b'{"v":9}')])))
    batch.add(raw(1, encode_changes(5, [(b"a", b'{"v":5}')])))  # a replay of an old change
    (item,) = batch.items()
    assert item.change.ts == 9
    assert [e.id for e in batch.take_settled()] == [b"1-1"]


def test_dead_letter_settles_the_item() -> None:
    batch = Batch(partition=4, max_deliveries=3, started=0.0)
    batch.add(raw(0, encode_changes(5, [(b"a", b"{}"), (b"b", b"{}")])))
    first, second = batch.items()
    batch.settle(first)
    assert batch.take_settled() == []
    batch.dead_letter(second, "400 mapper_parsing_exception")
    (letter,) = batch.take_letters()
    assert letter.key == b"b" and letter.source == "p4/1-0" and letter.doc == b"{}"
    assert [e.id for e in batch.take_settled()] == [b"1-0"]


def test_flush_policy() -> None:
    def flush(entries: int, changes: int, age: float, drained: bool) -> bool:
        return should_flush(entries, changes, age, drained=drained, max_changes=10, max_age_s=5.0)

    assert not flush(0, 0, 99.0, True)
    assert flush(1, 0, 0.0, True)  # markers only
    assert flush(3, 3, 0.0, True)
    assert not flush(3, 3, 0.0, False)
    assert flush(3, 10, 0.0, False)
    assert flush(3, 3, 5.0, False)


@given(st.integers(-10, 5000), st.floats(0.0, 300.0))
def test_a_read_asks_for_about_the_room_in_changes(room: int, per_entry: float) -> None:
    wanted = entries_to_read(room, per_entry)
    assert wanted >= 1  # a full batch still reads one entry, as the flush policy expects
    if room > 0:
        assert wanted * max(1.0, per_entry) <= max(room, 1.0, per_entry)


def test_large_entries_read_few_at_a_time() -> None:
    assert entries_to_read(1000, 1.0) == 1000
    assert entries_to_read(1000, 256.0) == 3
    assert entries_to_read(100, 256.0) == 1


@given(st.integers(0, 60), st.integers(1, 25))
def test_chunks_keep_order_and_size(count: int, size: int) -> None:
    items = [Item(Change(1, f"k{n}".encode(), None), n, 1) for n in range(count)]
    chunks = chunked(items, size)
    assert [item for chunk in chunks for item in chunk] == items
    assert all(1 <= len(chunk) <= size for chunk in chunks)


@given(st.lists(st.integers(0, 5000), max_size=40), st.integers(1, 25), st.integers(200, 20_000))
def test_chunks_are_capped_in_bytes_and_a_big_item_goes_alone(
    sizes: list[int], size: int, max_bytes: int
) -> None:
    items = [Item(Change(1, f"k{n}".encode(), b"x" * doc), n, 1) for n, doc in enumerate(sizes)]
    chunks = chunked(items, size, max_bytes)
    assert [item for chunk in chunks for item in chunk] == items
    for chunk in chunks:
        assert 1 <= len(chunk) <= size
        assert len(chunk) == 1 or sum(item_bytes(item) for item in chunk) <= max_bytes


def test_a_bad_field_of_a_batch_entry_costs_only_its_change() -> None:
    fields = encode_changes(7, [(b"a", b'{"v":1}'), (b"b", None), (b"c", b'{"v":3}')])
    fields[b"u:"] = b'{"v":"no key"}'  # a key the codec cannot carry
    fields[b"x:d"] = b"{}"  # an unknown kind
    fields[b"n"] = b"5"
    batch = Batch(partition=0, max_deliveries=3, started=0.0)
    batch.add(raw(0, fields))
    assert sorted(item.change.key for item in batch.items()) == [b"a", b"b", b"c"]
    letters = batch.take_letters()
    assert sorted((letter.key, letter.doc) for letter in letters) == [
        (b"", b'{"v":"no key"}'),
        (b"x:d", b"{}"),
    ]
    assert all(
        letter.ts == 7 and letter.reason.startswith("malformed change") for letter in letters
    )
    assert batch.changes == 5  # what the producer counted into written:p<N>


def test_entries_above_the_high_water_mark_never_reach_the_frontier() -> None:
    batch = Batch(partition=0, max_deliveries=3, started=0.0, ts_bound=1_000)
    batch.add(raw(0, encode_changes(900, [(b"a", b"{}")])))
    batch.add(raw(1, encode_progress(950)))
    batch.add(raw(2, encode_progress(99_999_999_999_999)))  # added by hand
    batch.add(raw(3, encode_changes(5_000, [(b"b", b"{}")])))  # added by hand
    assert batch.progress_ts == 950 and batch.progress_id == b"1-1"
    assert [item.change.key for item in batch.items()] == [b"a"]
    letters = batch.take_letters()
    assert [(letter.op, letter.ts) for letter in letters] == [
        (b"p", 99_999_999_999_999),
        (b"u", 5_000),
    ]
    assert all("high-water mark 1000" in letter.reason for letter in letters)
    # the whole entry is kept, so it can be looked at and retried
    assert letters[1].doc == b'{"ts":"5000","op":"u","key":"b","doc":"{}"}'
    assert batch.changes == 2
