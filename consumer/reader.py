"""Reading one partition's stream: new entries, and a takeover's pending ones.

A partition is read only by the holder of its lease, so reads are per partition:
XREADGROUP ``>`` for new entries (BLOCK at most :data:`READ_BLOCK_MS` while the
batch is empty, no BLOCK while filling it), and on takeover XAUTOCLAIM of every
pending entry of the partition (whoever held it) before anything new, so the
changes of a key are applied in stream order across handovers.

Entries can also become pending behind the owner's back: a previous owner paused
past its lease (GC pause, SIGSTOP, slow host) may do one more XREADGROUP ``>``
before it notices, and those entries then sit under its name. The owner finds
them with :func:`pending_count` and :func:`pending_below` and takes them over
with :func:`claim_pending` or :func:`claim_ids` (consumer.runner decides when).

Redis counts a delivery for every XREADGROUP, XAUTOCLAIM and XCLAIM, whether or
not the entry ever reached OpenSearch: a rebalance, a restart or a Redis outage
longer than the lease each add one. MAX_DELIVERIES therefore reads the
consumers' own count of real attempts instead (consumer.attempts), which every
read here returns with the entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis

from .attempts import read_attempts
from .batch import RawEntry

__all__ = [
    "READ_BLOCK_MS",
    "below",
    "claim_ids",
    "claim_pending",
    "pending_below",
    "pending_count",
    "read_new",
]

# Short enough that a stop or a lost lease is noticed quickly, long enough not to spin.
READ_BLOCK_MS: Final = 100
_START: Final = b"0-0"
# XPENDING range bound: from the first entry.
_FIRST: Final = b"-"


async def read_new(
    redis: Redis, stream: str, group: str, consumer: str, count: int, *, block: bool
) -> list[RawEntry]:
    """Up to ``count`` never-delivered entries of ``stream`` (no attempts yet).

    With ``block`` waits up to READ_BLOCK_MS for the first one; otherwise returns
    at once. Raises redis.exceptions.RedisError on connection trouble.
    """
    reply: Any = await redis.xreadgroup(
        group, consumer, {stream: ">"}, count=count, block=READ_BLOCK_MS if block else None
    )
    if not reply:
        return []
    _, entries = reply[0]
    return [RawEntry(entry_id, fields, 0) for entry_id, fields in entries if fields is not None]


async def claim_pending(
    redis: Redis,
    stream: str,
    group: str,
    consumer: str,
    count: int,
    *,
    attempts: str,
    cursor: bytes = _START,
) -> tuple[bytes, list[RawEntry]]:
    """Take over up to ``count`` pending entries of ``stream`` from ``cursor`` on.

    ``attempts`` is the partition's attempts hash. Returns the next cursor (``0-0``
    once the whole pending list was scanned; the entries below it are now
    ``consumer``'s) and the entries with their attempts so far. Entries trimmed
    away while pending are dropped from the pending list by XAUTOCLAIM itself. One
    round trip, two if anything was claimed. Raises redis.exceptions.RedisError on
    connection trouble.
    """
    reply: Any = await redis.xautoclaim(stream, group, consumer, 0, cursor, count=count)
    next_cursor: bytes = reply[0]
    return next_cursor, await _with_attempts(redis, attempts, reply[1])


async def claim_ids(
    redis: Redis, stream: str, group: str, consumer: str, ids: Sequence[bytes], *, attempts: str
) -> list[RawEntry]:
    """Take over the pending entries ``ids`` of ``stream`` (XCLAIM).

    Returns the entries with their attempts so far, in id order; entries trimmed
    away while pending are dropped from the pending list by XCLAIM itself (Redis
    >= 7.0) and left out. One round trip, two if anything was claimed. Raises
    redis.exceptions.RedisError on connection trouble.
    """
    if not ids:
        return []
    reply: Any = await redis.xclaim(stream, group, consumer, 0, list(ids))
    return await _with_attempts(redis, attempts, reply)


async def _with_attempts(redis: Redis, attempts: str, claimed: Sequence[Any]) -> list[RawEntry]:
    found = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
    if not found:
        return []
    counts = await read_attempts(redis, attempts, [entry_id for entry_id, _ in found])
    return [
        RawEntry(entry_id, fields, count)
        for (entry_id, fields), count in zip(found, counts, strict=True)
    ]


async def pending_count(redis: Redis, stream: str, group: str) -> int:
    """How many entries of ``stream`` are pending in ``group``, under any consumer.

    One round trip (XPENDING summary). Raises redis.exceptions.RedisError on
    connection trouble.
    """
    summary: Any = await redis.xpending(stream, group)
    return int(summary["pending"])


def below(entry_id: bytes) -> bytes:
    """The exclusive XPENDING/XRANGE end bound just below ``entry_id``."""
    return b"(" + entry_id


async def pending_below(
    redis: Redis, stream: str, group: str, entry_id: bytes, count: int
) -> list[bytes]:
    """Ids of up to ``count`` entries below ``entry_id`` still pending in ``group``, oldest first.

    Under any consumer. One round trip (XPENDING with an exclusive end). Raises
    redis.exceptions.RedisError on connection trouble.
    """
    rows: Any = await redis.xpending_range(stream, group, _FIRST, below(entry_id), count)
    return [row["message_id"] for row in rows]
