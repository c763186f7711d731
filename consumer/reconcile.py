"""Deleting what a lost-history snapshot did not contain, once, after it is applied.

When the producer could not resume (Materialize had compacted the history it
needed) it wrote a fresh snapshot at ts T as upserts, an ``r`` entry at T into
every partition, and ``reconcile[T] = "pending"``. Documents deleted in the lost
history are still in the index with versions below T. Once every partition's
applied frontier is above T (all snapshot rows are in), one consumer, holding
``reconcile:lock``, runs ``_delete_by_query`` for ``sync_version < T`` (in a
resync's new index too, while consumers dual-write: consumer.dualwrite) and marks
``reconcile[T] = "done"``. Re-running it is harmless (``conflicts=proceed``, and a
document rewritten meanwhile has a version ≥ T), so a lock that expires under a
dead consumer only costs a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from ..common.cancellation import raise_if_cancelled
from ..common.entries import VERSION_FIELD
from ..common.keys import RECONCILE_DONE, RECONCILE_PENDING, Keys
from ..common.owned_keys import RELEASE, RENEW
from ..common.partition_state import read_applied
from .dualwrite import DualWrite

__all__ = ["Reconciler", "due_snapshots"]

log = logging.getLogger(__name__)

LOCK_TTL_MS: Final = 30_000
LOCK_RENEW_SECONDS: Final = 10.0
DELETE_TIMEOUT_SECONDS: Final = 600.0


def due_snapshots(
    reconcile: Mapping[bytes, bytes], applied: Mapping[bytes, bytes], partitions: int
) -> list[int]:
    """Pending snapshot timestamps T with every partition applied beyond T, oldest first.

    A partition without an applied frontier yet holds everything back.
    """
    frontiers: list[int] = []
    for partition in range(partitions):
        raw = applied.get(f"p{partition}".encode())
        if raw is None:
            return []
        frontiers.append(int(raw))
    low = min(frontiers, default=0)
    due = [
        int(ts) for ts, state in reconcile.items() if state == RECONCILE_PENDING and low > int(ts)
    ]
    return sorted(due)


class Reconciler:
    """Runs due reconciles for one view; any number of consumers may call :meth:`run_due`."""

    def __init__(
        self,
        redis: Redis,
        client: AsyncOpenSearch,
        keys: Keys,
        alias: str,
        me: str,
        *,
        dual: DualWrite | None = None,
    ):
        self._redis = redis
        self._dual = dual
        self._client = client
        self._keys = keys
        self._alias = alias
        self._me = me
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)

    async def run_due(self) -> list[int]:
        """Run every due reconcile this process can lock; return the snapshot ts done.

        Cheap when nothing is pending (one HGETALL; then a GET per partition). Raises RedisError
        opensearchpy.TransportError; the reconcile then stays pending for a retry.
        """
        states: dict[bytes, bytes] = await self._redis.hgetall(self._keys.reconcile)  # type: ignore[assignment]
        if RECONCILE_PENDING not in states.values():
            return []
        applied = await read_applied(self._redis, self._keys)
        done: list[int] = []
        for ts in due_snapshots(states, applied, self._keys.partitions):
            if await self._run_locked(ts):
                done.append(ts)
        return done

    async def _run_locked(self, ts: int) -> bool:
        lock = self._keys.reconcile_lock
        if not await self._redis.set(lock, self._me, nx=True, px=LOCK_TTL_MS):
            return False
        keeper = asyncio.create_task(self._keep_lock())
        try:
            # someone may have finished it between our HGETALL and the lock
            if await self._redis.hget(self._keys.reconcile, str(ts)) != RECONCILE_PENDING:
                return False
            deleted = await self._delete_older_than(ts)
            await self._redis.hset(self._keys.reconcile, str(ts), RECONCILE_DONE)
            log.warning(
                "Reconcile after snapshot at ts=%d: deleted %d documents with %s < %d "
                "(changes lost with Materialize's compacted history)",
                ts,
                deleted,
                VERSION_FIELD,
                ts,
            )
            return True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._release(keys=[lock], args=[self._me])

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_SECONDS)
            await self._renew(keys=[self._keys.reconcile_lock], args=[self._me, LOCK_TTL_MS])
            raise_if_cancelled()  # redis-py may have swallowed it (common.cancellation)

    async def _delete_older_than(self, ts: int) -> int:
        deleted = await self._delete_in(self._alias, ts)
        target = self._dual.target if self._dual is not None else None
        if target is not None:
            # a resync's new index: its snapshot rows older than ts are just as stale
            # (rows written since carry ts or more), and it becomes the live index
            await self._delete_in(target, ts)
        return deleted

    async def _delete_in(self, index: str, ts: int) -> int:
        # _delete_by_query only sees what a refresh has made searchable: without this,
        # documents indexed in the last refresh_interval would survive the reconcile
        await self._client.indices.refresh(index=index)
        response: Any = await self._client.delete_by_query(
            index=index,
            body={"query": {"range": {VERSION_FIELD: {"lt": ts}}}},
            params={
                "conflicts": "proceed",
                "refresh": "true",
                "request_timeout": DELETE_TIMEOUT_SECONDS,
            },
        )
        return int(response.get("deleted", 0))
