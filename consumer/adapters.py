"""The real adapters of consumer.ports: Redis Streams, OpenSearch and the system clock.

:func:`runner_deps` is the one place a consumer's runners get wired to Redis and
OpenSearch (consumer.worker calls it); the deterministic simulator (tests/sim)
wires the same runner code to in-memory models instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from ..common.config import Settings
from ..common.entries import DeadLetter
from ..common.keys import Keys
from ..common.logs import LogGate
from .acks import Acker
from .attempts import Attempts, new_token
from .batch import RawEntry
from .dualwrite import DualWrite
from .highwater import HighWater
from .leases import Leases
from .metrics import ConsumerMetrics
from .outcomes import RetryPolicy
from .reader import claim_ids, claim_pending, pending_below, pending_count, read_new
from .runner import BLOCKED_LOG_SECONDS, RunnerDeps
from .sender import BulkSender

__all__ = ["RedisStreamStore", "SystemClock", "retry_policy", "runner_deps"]


class SystemClock:
    """time.monotonic and time.time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class RedisStreamStore:
    """consumer.ports.StreamStore over Redis: consumer.reader, consumer.acks,
    consumer.leases' fence, consumer.attempts and consumer.highwater, for one
    consumer (``me``) of ``group``. Raises redis.exceptions.RedisError (and settle
    consumer.acks.LetterWaitTimeout, transient)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        me: str,
        leases: Leases,
        *,
        wait: tuple[int, int] | None = None,
    ) -> None:
        """``wait``: REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT_MS for the dead letters
        (consumer.acks), None for none."""
        self._redis = redis
        self._keys = keys
        self._group = group
        self._me = me
        self._leases = leases
        self._acker = Acker(redis, keys, group, wait=wait)
        self._attempts = Attempts(redis)
        self._high_water = HighWater(redis, keys.high_water)

    async def read_new(self, partition: int, count: int, *, block: bool) -> list[RawEntry]:
        stream = self._keys.stream(partition)
        return await read_new(self._redis, stream, self._group, self._me, count, block=block)

    async def claim_pending(
        self, partition: int, count: int, cursor: bytes
    ) -> tuple[bytes, list[RawEntry]]:
        return await claim_pending(
            self._redis,
            self._keys.stream(partition),
            self._group,
            self._me,
            count,
            attempts=self._keys.attempts(partition),
            cursor=cursor,
        )

    async def claim_ids(self, partition: int, ids: Sequence[bytes]) -> list[RawEntry]:
        return await claim_ids(
            self._redis,
            self._keys.stream(partition),
            self._group,
            self._me,
            ids,
            attempts=self._keys.attempts(partition),
        )

    async def pending_count(self, partition: int) -> int:
        return await pending_count(self._redis, self._keys.stream(partition), self._group)

    async def pending_below(self, partition: int, entry_id: bytes, count: int) -> list[bytes]:
        stream = self._keys.stream(partition)
        return await pending_below(self._redis, stream, self._group, entry_id, count)

    async def settle(
        self,
        partition: int,
        entry_ids: Sequence[bytes],
        changes: int,
        letters: Sequence[DeadLetter] = (),
        *,
        sent: Sequence[bytes] = (),
        charged: Sequence[bytes] = (),
        check_below: bytes | None = None,
        check_count: int = 1,
        floor: int | None = None,
    ) -> list[bytes]:
        return await self._acker.settle(
            partition,
            entry_ids,
            changes,
            letters,
            sent=sent,
            charged=charged,
            check_below=check_below,
            check_count=check_count,
            floor=floor,
        )

    async def snapshot_floor(self, partition: int) -> int | None:
        return await self._acker.snapshot_floor(partition)

    async def advance(self, partition: int, applied_ts: int) -> None:
        await self._acker.advance(partition, applied_ts)

    async def fence(self, partition: int, token: str, entry_ids: Iterable[bytes] = ()) -> bool:
        return await self._leases.fence(partition, token, entry_ids)

    async def recover_attempts(self, partition: int, token: str) -> int:
        return await self._attempts.recover(self._keys.attempts(partition), token)

    async def ts_bound(self, highest_ts: int) -> int:
        return await self._high_water.bound_for(highest_ts)

    async def set_blocked(self, partition: int, state: str, ttl_ms: int) -> None:
        await self._redis.set(self._keys.blocked(partition), state, px=ttl_ms)

    async def clear_blocked(self, partition: int) -> None:
        await self._redis.delete(self._keys.blocked(partition))


def retry_policy(settings: Settings) -> RetryPolicy:
    """MAX_DELIVERIES and the RETRY_* backoff of ``settings``."""
    return RetryPolicy(
        max_deliveries=settings.max_deliveries,
        initial_backoff=settings.retry_initial_backoff,
        max_backoff=settings.retry_max_backoff,
        multiplier=settings.retry_backoff_multiplier,
    )


def runner_deps(
    settings: Settings,
    redis: Redis,
    client: AsyncOpenSearch,
    metrics: ConsumerMetrics,
    *,
    keys: Keys,
    leases: Leases,
    dual: DualWrite,
) -> RunnerDeps:
    """What every runner of one consumer shares, wired to Redis and OpenSearch."""
    me = leases.me
    return RunnerDeps(
        settings=settings,
        store=RedisStreamStore(
            redis,
            keys,
            settings.consumer_group,
            me,
            leases,
            wait=(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
            if settings.redis_wait_replicas > 0
            else None,
        ),
        sink=BulkSender(client, settings.os_index_name, settings.os_timeout_seconds, dual=dual),
        clock=SystemClock(),
        me=me,
        metrics=metrics,
        policy=retry_policy(settings),
        token=new_token(me),
        gate=LogGate(BLOCKED_LOG_SECONDS),
    )
