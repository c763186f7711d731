"""Reading one partition's stream: new entries, a takeover's pending ones, our own again.

A partition is read only by the holder of its lease, so reads are per partition:
XREADGROUP ``>`` for new entries (BLOCK at most :data:`READ_BLOCK_MS` while the
batch is empty, no BLOCK while filling it), and on takeover XAUTOCLAIM of every
pending entry of the partition (whoever held it) before anything new, so the
changes of a key are applied in stream order across handovers.

Redis counts deliveries per pending entry, and MAX_DELIVERIES reads that count.
Measured on Redis 7.0: XREADGROUP ``>`` sets it to 1, XAUTOCLAIM and XCLAIM add
one, and so does XREADGROUP with an explicit id (re-reading one's own history);
XPENDING, XRANGE and the JUSTID forms of XCLAIM/XAUTOCLAIM leave it alone. So
:func:`claim_pending` counts a delivery and :func:`read_held` does not; which one
applies to which entry is the runner's decision (consumer.runner).
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis

from consumer.batch import RawEntry

__all__ = ["READ_BLOCK_MS", "claim_pending", "held_below", "read_held", "read_new"]

# Short enough that a stop or a lost lease is noticed quickly, long enough not to spin.
READ_BLOCK_MS: Final = 100
_START: Final = b"0-0"
# XPENDING range bounds: from the first entry, up to the last one.
_FIRST: Final = b"-"
_LAST: Final = b"+"


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

    Counts one delivery for each entry (XAUTOCLAIM), whoever held it before.
    Returns the next cursor (``0-0`` once the whole pending list was scanned; the
    entries below it are now ``consumer``'s) and the entries with their delivery
    counts (this delivery included). Entries trimmed away while pending are
    dropped from the pending list by XAUTOCLAIM itself. One round trip, two if
    anything was claimed. Raises redis.exceptions.RedisError on connection trouble.
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


def held_below(cursor: bytes) -> bytes:
    """The ``below`` bound of :func:`read_held` covering what :func:`claim_pending` claimed
    up to ``cursor`` (its returned cursor; ``0-0`` = the whole pending list)."""
    return _LAST if cursor == _START else b"(" + cursor


async def read_held(
    redis: Redis,
    stream: str,
    group: str,
    consumer: str,
    count: int,
    *,
    after: bytes = _FIRST,
    below: bytes = _LAST,
) -> tuple[bytes | None, list[RawEntry]]:
    """Up to ``count`` pending entries that ``consumer`` holds already, without counting one.

    ``after`` and ``below`` are XPENDING bounds: ``-``/``+``, or ``(<id>`` for an
    exclusive one. Returns the ``after`` to continue from (None when the range is
    exhausted) and the entries with their delivery counts as they stand. Entries
    trimmed away while pending are skipped and stay in the pending list until the
    next :func:`claim_pending` scan drops them. Two round trips (XPENDING, then one
    pipeline of XRANGE per entry). Raises redis.exceptions.RedisError on connection
    trouble.
    """
    rows: Any = await redis.xpending_range(
        stream, group, after, below, count, consumername=consumer
    )
    if not rows:
        return None, []
    ids: list[bytes] = [row["message_id"] for row in rows]
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(stream, entry_id, entry_id)
        found: list[Any] = await pipe.execute()
    entries = [
        RawEntry(entry_id, hits[0][1], int(row["times_delivered"]))
        for entry_id, row, hits in zip(ids, rows, found, strict=True)
        if hits
    ]
    return (b"(" + ids[-1] if len(ids) == count else None), entries
