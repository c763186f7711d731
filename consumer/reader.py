"""Reading one partition's stream: new entries, and the pending ones of a takeover.

A partition is read only by the holder of its lease, so reads are per partition:
XREADGROUP ``>`` for new entries (BLOCK at most :data:`READ_BLOCK_MS` while the
batch is empty, no BLOCK while filling it), and on takeover XAUTOCLAIM of every
pending entry of the partition (whoever held it) before anything new, so the
changes of a key are applied in stream order across handovers.
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis

from consumer.batch import RawEntry

__all__ = ["READ_BLOCK_MS", "claim_pending", "read_new"]

# Short enough that a stop or a lost lease is noticed quickly, long enough not to spin.
READ_BLOCK_MS: Final = 100
_START: Final = b"0-0"


async def read_new(
    redis: Redis, stream: str, group: str, consumer: str, count: int, *, block: bool
) -> list[RawEntry]:
    """Up to ``count`` never-delivered entries of ``stream`` (first delivery each).

    With ``block`` waits up to READ_BLOCK_MS for the first one; otherwise returns
    at once. Raises redis.exceptions.RedisError on connection trouble.
    """
    reply: Any = await redis.xreadgroup(
        group, consumer, {stream: ">"}, count=count, block=READ_BLOCK_MS if block else None
    )
    if not reply:
        return []
    _, entries = reply[0]
    return [RawEntry(entry_id, fields, 1) for entry_id, fields in entries if fields is not None]


async def claim_pending(
    redis: Redis, stream: str, group: str, consumer: str, count: int, *, cursor: bytes = _START
) -> tuple[bytes, list[RawEntry]]:
    """Take over up to ``count`` pending entries of ``stream`` from ``cursor`` on.

    Returns the next cursor (``0-0`` once the whole pending list was scanned) and
    the entries with their delivery counts (this delivery included). Entries
    trimmed away while pending are dropped from the pending list by XAUTOCLAIM
    itself. Raises redis.exceptions.RedisError on connection trouble.
    """
    reply: Any = await redis.xautoclaim(stream, group, consumer, 0, cursor, count=count)
    next_cursor: bytes = reply[0]
    claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
    if not claimed:
        return next_cursor, []
    # XAUTOCLAIM scans the pending list in id order and, with min-idle 0, claims
    # everything it scans: the claimed ids are exactly the pending ones in this range.
    details: Any = await redis.xpending_range(
        stream, group, claimed[0][0], claimed[-1][0], len(claimed), consumername=consumer
    )
    counts = {row["message_id"]: int(row["times_delivered"]) for row in details}
    return next_cursor, [
        RawEntry(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in claimed
    ]
