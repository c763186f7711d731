"""Trimming streams: partitions without losing what the group needs, and the dlq by age.

A partition entry may go only when the group has acknowledged it (delivered and
no longer pending) AND it is older than STREAM_RETENTION_SECONDS, so a replay
(``XRANGE`` and ``XADD`` by hand until a replay command exists) finds a day of
history by default. The cut is XTRIM MINID with ``~``: Redis then frees whole
macro-nodes only, which is cheap and can only keep more than asked, never less.

The dead-letter stream holds whole documents (names, emails, addresses), so it
is kept only DLQ_RETENTION_SECONDS (7 days by default) by :func:`trim_dlq`,
whether or not anyone read it: a letter older than that is gone for good.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

__all__ = ["parse_id", "trim", "trim_dlq", "trim_floor"]


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"1700000000000-3"`` → ``(1700000000000, 3)``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def trim_floor(
    now_ms: int,
    retention_seconds: int,
    last_delivered: tuple[int, int],
    oldest_pending: tuple[int, int] | None,
) -> tuple[int, int] | None:
    """The MINID below which every entry is acknowledged and older than the retention.

    ``last_delivered`` is the group's last-delivered-id (entries after it are
    unread); ``oldest_pending`` the smallest id still pending, if any. Returns
    None when nothing may be trimmed.
    """
    # the first id that is NOT acknowledged: the oldest pending, or the first unread
    first_unread = (last_delivered[0], last_delivered[1] + 1)
    too_young = (now_ms - retention_seconds * 1000, 0)
    floor = min(first_unread, too_young, oldest_pending or first_unread)
    return floor if floor > (0, 0) else None


async def trim(redis: Redis, stream: str, group: str, retention_seconds: int) -> int:
    """Trim ``stream`` by :func:`trim_floor`; return how many entries Redis removed.

    A stream without the group is left alone. Raises redis.exceptions.RedisError
    on connection trouble.
    """
    groups: Any = await redis.xinfo_groups(stream)
    mine = next((g for g in groups if _text(g["name"]) == group), None)
    if mine is None:
        return 0
    summary: Any = await redis.xpending(stream, group)
    oldest = parse_id(summary["min"]) if summary.get("pending") else None
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    floor = trim_floor(now_ms, retention_seconds, parse_id(mine["last-delivered-id"]), oldest)
    if floor is None:
        return 0
    removed: Any = await redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True)
    return int(removed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def trim_dlq(redis: Redis, dlq: str, retention_seconds: int) -> int:
    """Remove dead letters older than ``retention_seconds`` (by their entry id's time).

    Exact (no ``~``): the README promises the retention. Returns how many were
    removed. One or two round trips; raises redis.exceptions.RedisError on
    connection trouble.
    """
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    floor = f"{now_ms - retention_seconds * 1000}-0"
    removed: Any = await redis.xtrim(dlq, minid=floor, approximate=False)
    return int(removed)
