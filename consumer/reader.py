"""Reading one partition's stream: new entries, a takeover's pending ones, our own again.

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

Redis counts deliveries per pending entry, and MAX_DELIVERIES reads that count.
Measured on Redis 7.0: XREADGROUP ``>`` sets it to 1, XAUTOCLAIM and XCLAIM add
one, and so does XREADGROUP with an explicit id (re-reading one's own history);
XPENDING, XRANGE and the JUSTID forms of XCLAIM/XAUTOCLAIM leave it alone. So
:func:`claim_pending` counts a delivery and :func:`read_held` does not; which one
applies to which entry is the runner's decision (consumer.runner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis

from consumer.batch import RawEntry

__all__ = [
    "READ_BLOCK_MS",
    "below",
    "claim_ids",
    "claim_pending",
    "held_below",
    "pending_below",
    "pending_count",
    "read_held",
    "read_new",
]

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
    # XAUTOCLAIM scans the pending list in id order and, with min-idle 0, claims
    # everything it scans: the claimed ids are exactly the pending ones in this range.
    return next_cursor, await _with_deliveries(redis, stream, group, consumer, reply[1])


async def claim_ids(
    redis: Redis, stream: str, group: str, consumer: str, ids: Sequence[bytes]
) -> list[RawEntry]:
    """Take over the pending entries ``ids`` of ``stream`` (XCLAIM), counting one delivery each.

    ``ids`` must be a run of consecutive pending entries in id order, as
    :func:`pending_below` returns them. Returns the entries with their delivery
    counts (this delivery included), in id order; entries trimmed away while
    pending are dropped from the pending list by XCLAIM itself (Redis >= 7.0) and
    left out. One round trip, two if anything was claimed. Raises
    redis.exceptions.RedisError on connection trouble.
    """
    if not ids:
        return []
    reply: Any = await redis.xclaim(stream, group, consumer, 0, list(ids))
    return await _with_deliveries(redis, stream, group, consumer, reply)


async def _with_deliveries(
    redis: Redis, stream: str, group: str, consumer: str, claimed: Sequence[Any]
) -> list[RawEntry]:
    """``claimed`` (id, fields) pairs, just claimed by ``consumer``, with their delivery counts.

    The claimed ids must be every pending entry between the first and the last of
    them (so one XPENDING range of that many rows lists exactly them).
    """
    found = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
    if not found:
        return []
    details: Any = await redis.xpending_range(
        stream, group, found[0][0], found[-1][0], len(found), consumername=consumer
    )
    counts = {row["message_id"]: int(row["times_delivered"]) for row in details}
    return [RawEntry(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in found]


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


def held_below(cursor: bytes) -> bytes:
    """The ``below`` bound of :func:`read_held` covering what :func:`claim_pending` claimed
    up to ``cursor`` (its returned cursor; ``0-0`` = the whole pending list)."""
    return _LAST if cursor == _START else below(cursor)


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
