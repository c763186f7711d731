"""producer/batches.py: changes → per-partition entries, capped, in timestamp order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.entries import Change, decode_entry
from common.partition import partition_of
from producer.batches import build_entries

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
