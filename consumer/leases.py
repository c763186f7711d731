"""Membership heartbeats and partition leases in Redis.

A consumer heartbeats into ``members`` (score = Redis server time in ms, so
clocks of different hosts never matter) and holds ``searchsync:{<view>:p<N>}:lease``
(value = its name) for every partition it reads. Leases are renewed on every membership tick
(a fifth of LEASE_TTL_SECONDS, at most 1 s) and checked-and-extended once more
right before each ``_bulk`` (:meth:`Leases.fence`).

LEASE_TTL_SECONDS is the promise "a dead consumer's partitions move within this
long". A lease therefore lives one tick less than that (:func:`hold_seconds`), and
a member whose heartbeat is that old is presumed dead: its lease has expired by
the time the others notice, and the next tick (at most one more) takes it over.

What fencing guarantees here: a consumer whose lease is gone (expired or taken)
sends no further bulk for that partition, and one whose renewals fail stops its
partition before its last successful renewal runs out (:meth:`Leases.expired`).
A bulk already on the wire cannot be recalled; the server-side fence for that
window is the external version: a late write of an older change loses against
anything newer the next owner wrote.

All scripts touch one key each, so they stay valid on Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis.asyncio import Redis

from ..common.keys import Keys
from ..common.owned_keys import RELEASE, RENEW
from ..common.pipelines import execute_pipeline

__all__ = ["Leases", "hold_seconds", "tick_seconds"]


def tick_seconds(ttl_seconds: float) -> float:
    """Membership tick: a fifth of the TTL (renewal well inside it), within 0.1-1 s."""
    return min(max(ttl_seconds / 5, 0.1), 1.0)


def hold_seconds(ttl_seconds: float) -> float:
    """How long a lease (and a heartbeat) stays valid without renewal: TTL minus a tick."""
    return max(ttl_seconds - tick_seconds(ttl_seconds), ttl_seconds / 2)


# KEYS[1] members; ARGV[1] me, ARGV[2] ttl ms. Returns {now_ms, {name, score, ...}}.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""

# KEYS[1] lease; ARGV[1] me, ARGV[2] ttl ms. Take a free lease or extend our own.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease, KEYS[2] attempts hash; ARGV[1] me, ARGV[2] ttl ms, ARGV[3] the runner's
# token, ARGV[4..] entry ids. Extend a lease we still hold and mark every entry about to
# be sent as in flight (consumer.attempts), in one step: a fenced-off runner marks nothing.
_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 4, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i] .. '@', ARGV[3])
end
return 1
"""


class Leases:
    """Heartbeat and lease operations of one consumer (``me``).

    Every method is one round trip, bounded by the Redis client's socket timeout,
    and raises redis.exceptions.RedisError subclasses on connection trouble.
    """

    def __init__(self, redis: Redis, keys: Keys, me: str, ttl_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self.me = me
        # lease PX and heartbeat staleness, in ms
        self.ttl_ms = max(int(hold_seconds(ttl_seconds) * 1000), 1)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._fence = redis.register_script(_FENCE)
        # monotonic deadline before which each held lease is surely still ours
        self._valid_until: dict[int, float] = {}

    async def heartbeat(self) -> tuple[int, dict[str, float]]:
        """Record that ``me`` is alive; return Redis' now (ms) and every recent heartbeat."""
        now, flat = await self._heartbeat(keys=[self._keys.members], args=[self.me, self.ttl_ms])
        beats = {
            (flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])): float(flat[i + 1])
            for i in range(0, len(flat), 2)
        }
        return int(now), beats

    def _mark(self, partition: int, started: float) -> None:
        self._valid_until[partition] = started + self.ttl_ms / 1000

    async def acquire(self, partition: int) -> bool:
        """Take ``partition``'s lease if it is free (or already ours)."""
        started = time.monotonic()
        got = await self._acquire(keys=[self._keys.lease(partition)], args=[self.me, self.ttl_ms])
        if got:
            self._mark(partition, started)
        return bool(got)

    async def renew(self, partitions: Iterable[int]) -> set[int]:
        """Extend the leases of ``partitions``; return those still ours (one pipeline)."""
        parts = list(partitions)
        if not parts:
            return set()
        started = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            # EVAL, not the registered script's EVALSHA: redis-py refuses EVALSHA in a
            # cluster pipeline (the script is a few dozen bytes)
            for partition in parts:
                pipe.eval(RENEW, 1, self._keys.lease(partition), self.me, self.ttl_ms)
            results = await execute_pipeline(pipe)
        held = {p for p, ok in zip(parts, results, strict=True) if ok}
        for partition in parts:
            if partition in held:
                self._mark(partition, started)
            else:
                self._valid_until.pop(partition, None)
        return held

    async def fence(self, partition: int, token: str = "", entry_ids: Iterable[bytes] = ()) -> bool:
        """Check-and-extend right before a write: True if the lease is still ours.

        With ``entry_ids``, the entries about to be sent, it also marks each as in
        flight under the runner's ``token`` (consumer.attempts), only if the lease is
        still ours.
        """
        started = time.monotonic()
        held = await self._fence(
            keys=[self._keys.lease(partition), self._keys.attempts(partition)],
            args=[self.me, self.ttl_ms, token, *entry_ids],
        )
        if held:
            self._mark(partition, started)
        else:
            self._valid_until.pop(partition, None)
        return bool(held)

    def expired(self, partition: int, now: float | None = None) -> bool:
        """True when no successful renewal vouches for the lease any more (local clock)."""
        deadline = self._valid_until.get(partition)
        return deadline is None or (time.monotonic() if now is None else now) >= deadline

    async def release(self, partition: int) -> None:
        """Give ``partition`` up, if it is still ours."""
        self._valid_until.pop(partition, None)
        await self._release(keys=[self._keys.lease(partition)], args=[self.me])

    async def leave(self, partitions: Iterable[int]) -> None:
        """Release ``partitions`` and leave ``members`` (one pipeline), for a clean shutdown."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                self._valid_until.pop(partition, None)
                pipe.eval(RELEASE, 1, self._keys.lease(partition), self.me)
            pipe.zrem(self._keys.members, self.me)
            await execute_pipeline(pipe)

    async def holders(self) -> list[str | None]:
        """Current holder of every partition's lease (None = free).

        One GET per partition on a pipeline, not an MGET: the leases are in their
        partitions' hash slots, which MGET may not span on a cluster."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in range(self._keys.partitions):
                pipe.get(self._keys.lease(partition))
            values = await execute_pipeline(pipe)
        return [v.decode() if isinstance(v, bytes) else v for v in values]
