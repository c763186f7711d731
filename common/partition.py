"""Which partition a key belongs to: ``crc32(key) % STREAM_PARTITIONS``."""

from __future__ import annotations

from zlib import crc32

__all__ = ["partition_of"]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` (UTF-8 bytes) among ``partitions`` streams."""
    return crc32(key) % partitions
