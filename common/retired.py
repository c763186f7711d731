"""Indexes a resync swapped out, kept for a grace period, then deleted.

``searchsync resync`` adds the old index to the ``retired`` sorted set (score =
the time in ms after which it may go). Every consumer sweeps the set every
:data:`SWEEP_SECONDS` (one ZRANGEBYSCORE when nothing is due), so the deletion
happens even if the command that retired it is long gone. An index that is
behind the alias again (an operator rolled back by hand) is never deleted: its
entry is dropped with a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from .index import inspect_layout
from .keys import Keys

__all__ = ["SWEEP_SECONDS", "sweep_retired"]

log = logging.getLogger(__name__)

SWEEP_SECONDS: Final = 5.0


async def sweep_retired(
    redis: Redis, client: AsyncOpenSearch, keys: Keys, alias: str, now_ms: int
) -> list[str]:
    """Delete the retired indexes whose grace is over; the names deleted.

    At most 1 + 3 requests per due index, each within the client's timeout.
    Raises redis.exceptions.RedisError and opensearchpy.TransportError (the next
    sweep tries again; deleting twice is harmless).
    """
    due: Any = await redis.zrangebyscore(keys.retired, "-inf", now_ms)
    if not due:
        return []
    layout = await inspect_layout(client, alias)
    deleted: list[str] = []
    for raw in due:
        name = raw.decode()
        if name in layout.members or name == alias:
            log.warning("Retired index %s is behind the alias %s again: keeping it", name, alias)
        else:
            await client.indices.delete(index=name, params={"ignore_unavailable": "true"})
            log.info("Deleted index %s (retired by a resync, its grace period is over)", name)
            deleted.append(name)
        await redis.zrem(keys.retired, name)
    return deleted
