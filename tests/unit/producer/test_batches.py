"""producer/batches.py: changes → per-partition entries, capped, in timestamp order, packed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import Change, decode_entry, encode_changes
from searchsync.common.partition import partition_of
from searchsync.producer.batches import Entry, build_entries, snapshot_entries

changes_per_ts = st.dictionaries(
    st.binary(min_size=1, max_size=12), st.one_of(st.none(), st.binary(max_size=30)), max_size=40
)


@given(st.lists(changes_per_ts, max_size=5), st.integers(1, 8), st.integers(1, 7))
def test_every_change_lands_once_in_its_partition_in_ts_order(
    per_ts: list[dict[bytes, bytes | None]], partitions: int, cap: int
) -> None:
    changes = [(100 + i, key, doc) for i, batch in enumerate(per_ts) for key, doc in batch.items()]
    entries = build_entries(changes, partitions, cap)
    seen: list[Change] = []
    last_ts = dict.fromkeys(range(partitions), 0)
    for entry in entries:
        decoded = decode_entry(entry.fields)
        assert isinstance(decoded, list)
        assert len(decoded) == entry.changes <= cap
        for change in decoded:
            assert partition_of(change.key, partitions) == entry.partition
            assert change.ts >= last_ts[entry.partition]
            last_ts[entry.partition] = change.ts
        seen.extend(decoded)
    assert sorted(seen, key=lambda c: (c.ts, c.key)) == sorted(
        (Change(ts, key, doc) for ts, key, doc in changes), key=lambda c: (c.ts, c.key)
    )


def test_single_change_is_a_plain_entry_and_many_share_one() -> None:
    one = build_entries([(5, b"o1", b"{}")], 1)
    assert one[0].fields[b"op"] == b"u"
    many = build_entries([(5, f"o{i}".encode(), b"{}") for i in range(300)], 1, 256)
    assert [e.changes for e in many] == [256, 44]
    assert all(e.fields[b"op"] == b"b" for e in many)


def test_changes_of_different_timestamps_never_share_an_entry() -> None:
    entries = build_entries([(5, b"o1", b"{}"), (6, b"o2", None)], 1)
    assert [(e.fields[b"ts"], e.changes) for e in entries] == [(b"5", 1), (b"6", 1)]


def _chunks_of(entries: list[Entry]) -> list[tuple[int, list[tuple[bytes, bytes | None]]]]:
    """(ts, changes) of every entry, decoded from the packed fields."""
    out = []
    for entry in entries:
        decoded = decode_entry(entry.fields)
        assert isinstance(decoded, list)
        out.append((decoded[0].ts, [(c.key, c.doc) for c in decoded]))
    return out


@given(st.lists(changes_per_ts, max_size=5), st.integers(1, 8), st.integers(1, 7))
def test_packed_fields_are_exactly_what_encode_changes_writes(
    per_ts: list[dict[bytes, bytes | None]], partitions: int, cap: int
) -> None:
    # Same fields, same order, same values as the shared codec, and a body that is
    # exactly `width` RESP bulk strings (Entry.fields parses it strictly).
    changes = [(100 + i, key, doc) for i, batch in enumerate(per_ts) for key, doc in batch.items()]
    entries = build_entries(changes, partitions, cap)
    for entry, (ts, chunk) in zip(entries, _chunks_of(entries), strict=True):
        expected = encode_changes(ts, chunk)
        assert list(entry.fields.items()) == list(expected.items())
        assert entry.op == expected[b"op"]
        assert entry.changes == len(chunk)
        assert entry.upserts == sum(1 for _, doc in chunk if doc is not None)
        assert entry.width == 2 * len(expected)


@given(
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=60),
    st.integers(1, 8),
    st.integers(1, 9),
)
def test_snapshot_entries_equal_build_entries_of_the_same_changes(
    rows: dict[str, str], partitions: int, cap: int
) -> None:
    def encode(values: str, ts: int) -> bytes:
        return f'{{"v":{values!r},"ts":{ts}}}'.encode()

    fast = snapshot_entries(7, rows, encode, partitions, cap)
    general = build_entries(
        [(7, key.encode(), encode(values, 7)) for key, values in rows.items()], partitions, cap
    )
    assert fast == general


def test_a_key_twice_at_one_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        build_entries([(5, b"o1", b"{}"), (5, b"o1", None)], 4)
    assert len(build_entries([(5, b"o1", b"{}"), (6, b"o1", None)], 1)) == 2


def test_malformed_body_is_reported() -> None:
    [entry] = build_entries([(5, b"o1", b"{}")], 1)
    with pytest.raises(ValueError, match="bulk string"):
        _ = entry._replace(body=entry.body[:-3]).fields
    with pytest.raises(ValueError, match="not 9"):
        _ = entry._replace(width=9).fields
