"""One active producer per view: a lease, a hot standby, and a fenced checkpoint.

Two producers of one view would each resume from the checkpoint and overwrite
each other's, so the checkpoint could move back and the streams get every change
twice. The active producer holds ``searchsync:<view>:producer`` (value
``<epoch>:<name>``, expiring after :func:`consumer.leases.hold_seconds`-like
LEASE_TTL_SECONDS minus a tick, renewed every tick); any other producer of the
view waits as a hot standby, trying to take the lease every tick, so it takes
over within LEASE_TTL_SECONDS of the active one's death. The epoch (INCR of
``producer:epoch`` on every acquisition) makes a holder's value unique, so a
producer that lost the lease and got it back is told apart from its old self.

The checkpoint is written only by a script that checks the lease value first and
only ever raises the checkpoint (:data:`FENCED_CHECKPOINT`): a paused old
producer that wakes up after losing the lease cannot move it, and nothing moves
it back. Its stray XADDs, if any, are changes the new producer writes too, read
from the same Materialize history at the same versions: external versions make
them harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..common.cancellation import raise_if_cancelled
from ..common.errors import TransientError
from ..common.keys import Keys
from ..common.owned_keys import RELEASE, RENEW

__all__ = [
    "FENCED_CHECKPOINT",
    "FENCED_RECONCILE",
    "MONOTONIC_CHECKPOINT",
    "ProducerFenced",
    "ProducerLease",
    "hold_seconds",
    "tick_seconds",
]

log = logging.getLogger("searchsync.producer.lease")

# KEYS[1] lease, KEYS[2] epoch; ARGV[1] name, ARGV[2] ttl ms, ARGV[3] the value we hold
# ("" if none). Returns the value held after the call, or false.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
end
if holder then
  return false
end
local value = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""


# Moves the checkpoint only up: KEYS[2] checkpoint; ARGV[2] the frontier. With ARGV[3]
# (a ts, "" for none) it first raises the high-water mark KEYS[3] (member ARGV[4]) to it.
_RAISE_CHECKPOINT = """
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], 'GT', ARGV[3], ARGV[4])
end
local current = redis.call('GET', KEYS[2])
if (not current) or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

#: KEYS[1] lease, KEYS[2] checkpoint, KEYS[3] high-water mark; ARGV[1] the lease value,
#: ARGV[2] the frontier, ARGV[3] the mark to raise ("" none), ARGV[4] its member.
#: -1: fenced (the lease is not ours: nothing written); 1: moved; 0: not moved (not above
#: the stored one). The mark is raised under the fence, before progress entries at the
#: frontier are written (producer.writer): a new lease holder reads the mark after
#: taking the lease, so no progress entry of a producer that lost it is ever above it.
FENCED_CHECKPOINT: Final = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
"""
    + _RAISE_CHECKPOINT
)

#: The same, without a producer lease (tests, tools): only up, never fenced.
MONOTONIC_CHECKPOINT: Final = _RAISE_CHECKPOINT

#: KEYS[1] lease, KEYS[2] the reconcile hash; ARGV[1] the lease value (``""`` once the
#: holder noticed it lost the lease: fenced like any other), ARGV[2] the snapshot's ts,
#: ARGV[3] the state. -1: fenced, nothing written. Without a lease (tests, tools) the
#: writer sends a plain HSET, as it moves the checkpoint with MONOTONIC_CHECKPOINT.
#: A producer paused past its lease must not start a reconcile of a snapshot
#: written behind its successor's back: its rows may land after the successor's progress
#: entries, and the reconcile would delete live documents until they do.
FENCED_RECONCILE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class ProducerFenced(TransientError):
    """The producer lease is not (or no longer) ours: stop writing, stand by."""


def tick_seconds(ttl_seconds: float) -> float:
    """How often the lease is renewed, and a standby tries to take it."""
    return min(max(ttl_seconds / 5, 0.1), 1.0)


def hold_seconds(ttl_seconds: float) -> float:
    """How long the lease stays without renewal: LEASE_TTL_SECONDS minus one tick, so a
    standby polling every tick takes over within LEASE_TTL_SECONDS."""
    return max(ttl_seconds - tick_seconds(ttl_seconds), ttl_seconds / 2)


class ProducerLease:
    """The producer lease of one view, seen from producer ``name``.

    Every method is one round trip, bounded by the Redis client's socket timeout,
    and raises redis.exceptions.RedisError on connection trouble, except the
    loops (:meth:`lead`, :meth:`keep`), which retry.
    """

    def __init__(self, redis: Redis, keys: Keys, name: str, ttl_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self.name = name
        self.tick = tick_seconds(ttl_seconds)
        self.hold_ms = max(int(hold_seconds(ttl_seconds) * 1000), 1)
        self.value = ""  # "<epoch>:<name>" while we hold it
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def try_acquire(self) -> bool:
        """Take the lease if it is free (or extend it if it is ours)."""
        value: Any = await self._acquire(
            keys=[self._keys.producer_lease, self._keys.producer_epoch],
            args=[self.name, self.hold_ms, self.value],
        )
        if not value:
            return False
        self.value = value.decode() if isinstance(value, bytes) else str(value)
        return True

    async def holder(self) -> str | None:
        raw: Any = await self._redis.get(self._keys.producer_lease)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def lead(self, stop: asyncio.Event) -> bool:
        """Wait, as a hot standby, until the lease is ours; False if ``stop`` came first."""
        announced = ""
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    log.info("Holding the producer lease of %s (%s)", self._keys.prefix, self.value)
                    return True
                holder = await self.holder() or "?"
                if holder != announced:
                    log.info(
                        "Standing by: the producer lease of %s is held by %s; taking over "
                        "when it expires",
                        self._keys.prefix,
                        holder,
                    )
                    announced = holder
            except RedisError as error:
                log.warning("Could not check the producer lease, retrying: %s", error)
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick)
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        """Renew every tick until cancelled; set ``lost`` once the lease is gone.

        Without Redis the lease is presumed lost once no renewal vouched for it
        for its whole hold time: by then a standby may hold it.
        """
        vouched = time.monotonic()
        while True:
            await asyncio.sleep(self.tick)
            try:
                renewed = await self._renew(
                    keys=[self._keys.producer_lease], args=[self.value, self.hold_ms]
                )
            except RedisError as error:
                raise_if_cancelled()
                if time.monotonic() - vouched >= self.hold_ms / 1000:
                    log.warning("Producer lease not renewed for its whole hold time: %s", error)
                    lost.set()
                    return
                continue
            raise_if_cancelled()
            if not renewed:
                log.warning(
                    "Lost the producer lease of %s (%s); standing by", self._keys.prefix, self.value
                )
                self.value = ""
                lost.set()
                return
            vouched = time.monotonic()

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes over at once."""
        if self.value:
            await self._release(keys=[self._keys.producer_lease], args=[self.value])
            self.value = ""
