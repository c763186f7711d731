"""common/partition.py: crc32(key) % N, stable and spread."""

from __future__ import annotations

from collections import Counter
from zlib import crc32

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.partition import partition_of


@given(st.binary(max_size=64), st.integers(1, 1024))
def test_in_range_and_crc32(key: bytes, n: int) -> None:
    assert 0 <= partition_of(key, n) < n
    assert partition_of(key, n) == crc32(key) % n


def test_known_value_is_stable() -> None:
    # pinned: a change here would re-route every key of every deployed stream
    assert partition_of(b"order:FM-1001", 8) == crc32(b"order:FM-1001") % 8 == 3


def test_order_keys_spread_evenly() -> None:
    counts = Counter(partition_of(f"order:FM-{i}".encode(), 8) for i in range(8000))
    assert len(counts) == 8
    assert max(counts.values()) < 1.15 * min(counts.values())
