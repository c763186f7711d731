"""common/entries.py: the codec round-trips and rejects malformed entries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import (
    BATCH,
    DELETE,
    PROGRESS,
    RECONCILE,
    UPSERT,
    Change,
    DeadLetter,
    EntryError,
    Marker,
    decode_dead_letter,
    decode_entry,
    encode_changes,
    encode_dead_letter,
    encode_progress,
    encode_reconcile,
)

keys = st.binary(min_size=1, max_size=40)
docs = st.one_of(st.none(), st.binary(max_size=200))
timestamps = st.integers(min_value=0, max_value=2**63 - 1)


@given(timestamps, st.dictionaries(keys, docs, min_size=1, max_size=30))
def test_changes_round_trip(ts: int, changes: dict[bytes, bytes | None]) -> None:
    fields = encode_changes(ts, list(changes.items()))
    decoded = decode_entry(fields)
    assert isinstance(decoded, list)
    assert decoded == [Change(ts, k, d) for k, d in changes.items()]
    assert fields[b"op"] == (
        BATCH if len(changes) > 1 else (DELETE if decoded[0].doc is None else UPSERT)
    )


def test_single_upsert_is_readable() -> None:
    assert encode_changes(17, [(b"order:1", b'{"a":1}')]) == {
        b"ts": b"17",
        b"op": b"u",
        b"key": b"order:1",
        b"doc": b'{"a":1}',
    }
    assert encode_changes(18, [(b"order:1", None)]) == {
        b"ts": b"18",
        b"op": b"d",
        b"key": b"order:1",
    }


def test_batch_is_readable_and_counts() -> None:
    fields = encode_changes(5, [(b"order:1", b"{}"), (b"order:2", None)])
    assert fields == {b"ts": b"5", b"op": b"b", b"n": b"2", b"u:order:1": b"{}", b"d:order:2": b""}


def test_duplicate_keys_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        encode_changes(1, [(b"k", b"{}"), (b"k", None)])


def test_empty_refused() -> None:
    with pytest.raises(ValueError):
        encode_changes(1, [])


@given(timestamps)
def test_markers(ts: int) -> None:
    assert decode_entry(encode_progress(ts)) == Marker(PROGRESS, ts)
    assert decode_entry(encode_reconcile(ts)) == Marker(RECONCILE, ts)


@pytest.mark.parametrize(
    "fields",
    [
        {b"op": b"u", b"key": b"k", b"doc": b"{}"},
        {b"ts": b"x", b"op": b"u", b"key": b"k", b"doc": b"{}"},
        {b"ts": b"1", b"op": b"u", b"key": b"k"},
        {b"ts": b"1", b"op": b"d"},
        {b"ts": b"1", b"op": b"z"},
        {b"ts": b"1", b"op": b"b", b"n": b"2", b"u:k": b"{}"},
        {b"ts": b"1", b"op": b"b", b"n": b"1", b"x:k": b"{}"},
        {b"ts": b"1", b"op": b"b", b"n": b"1", b"u:": b"{}"},
    ],
)
def test_malformed_entries_raise_entry_error(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(EntryError):
        decode_entry(fields)


@given(timestamps, keys, docs, st.text(max_size=80), st.integers(0, 100))
def test_dead_letter_round_trip(
    ts: int, key: bytes, doc: bytes | None, reason: str, deliveries: int
) -> None:
    letter = DeadLetter(
        ts=ts,
        op=DELETE if doc is None else UPSERT,
        key=key,
        doc=doc,
        reason=reason,
        source="p3/1-0",
        deliveries=deliveries,
    )
    assert decode_dead_letter(encode_dead_letter(letter)) == letter
