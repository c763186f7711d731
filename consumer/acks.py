"""Acknowledging settled entries of one partition, in one pipelined round trip.

In order: dead letters (XADD dlq), XACK of the entries, HINCRBY of
``counts`` ``acked:p<N>`` by the changes they held (the producer's backpressure
reads it, see common.buffer), and, when a batch is complete, the partition's
applied frontier. The frontier only moves forward: re-delivered old progress
entries (after a takeover) must not pull it back.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from common.entries import DeadLetter
from common.keys import Keys
from consumer.deadletters import queue_letters

__all__ = ["Acker"]

# KEYS[1] applied hash; ARGV[1] field p<N>, ARGV[2] frontier. Raise only.
_ADVANCE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (not current) or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class Acker:
    """Settles entries of any partition for ``group`` of one view."""

    def __init__(self, redis: Redis, keys: Keys, group: str) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._advance = redis.register_script(_ADVANCE)

    async def settle(
        self,
        partition: int,
        entry_ids: Sequence[bytes],
        changes: int,
        letters: Sequence[DeadLetter] = (),
        applied_ts: int | None = None,
    ) -> None:
        """One pipeline: letters, XACK ``entry_ids``, acked counter, applied frontier.

        Raises redis.exceptions.RedisError on connection trouble; then nothing or
        part of it happened, and the entries are delivered again (at least once).
        """
        if not entry_ids and not letters and applied_ts is None:
            return
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            queue_letters(pipe, keys, letters)
            if entry_ids:
                pipe.xack(keys.stream(partition), self._group, *entry_ids)
            if changes:
                pipe.hincrby(keys.counts, keys.acked_field(partition), changes)
            if applied_ts is not None:
                await self._advance(
                    keys=[keys.applied],
                    args=[keys.partition_name(partition), applied_ts],
                    client=pipe,
                )
            await pipe.execute()
