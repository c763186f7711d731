"""The producer's high-water mark: the highest ts any entry of the view may carry.

The producer raises ``searchsync:{<view>}:high_water`` (a sorted set with one member,
raised with ``ZADD GT``, so it never goes down) before the XADDs of every batch,
progress and reconcile entry: in the same pipeline on one Redis, in a round trip of
its own that must succeed first on a cluster (producer.writer).
By the time a consumer reads an entry, the mark already covers it; an entry above
it was not written by the producer (consumer.batch dead-letters it). Streams
written before the producer kept a mark have none: then an entry may be at most
:data:`FUTURE_TOLERANCE_MS` ahead of this host's clock (Materialize timestamps are
wall-clock milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio import Redis

from ..common.keys import HIGH_WATER_MEMBER

__all__ = ["FUTURE_TOLERANCE_MS", "HIGH_WATER_MEMBER", "HighWater", "bound_from"]

FUTURE_TOLERANCE_MS: Final = 3_600_000


def bound_from(mark: int | None, now_ms: int) -> int:
    """The highest acceptable ts given the producer's ``mark`` (None: it has none)."""
    if mark is None:
        return now_ms + FUTURE_TOLERANCE_MS
    return mark


class HighWater:
    """A cache of the mark, shared by the runners of one consumer.

    :meth:`bound_for` costs nothing while entries stay under the cached mark and
    one round trip (ZSCORE) when one is above it, which with a live producer is
    about once per batch: the cost of never trusting a hand-written entry.
    """

    def __init__(self, redis: Redis, key: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._key = key
        self._clock = clock
        self._mark: int | None = None

    async def bound_for(self, highest_ts: int) -> int:
        """A bound covering ``highest_ts`` if the producer announced it, else the true bound.

        Raises redis.exceptions.RedisError on connection trouble.
        """
        now_ms = int(self._clock() * 1000)
        if self._mark is not None and highest_ts <= self._mark:
            return self._mark
        raw: Any = await self._redis.zscore(self._key, HIGH_WATER_MEMBER)
        self._mark = int(raw) if raw is not None else None
        return bound_from(self._mark, now_ms)
