"""consumer.reconcile.Reconciler on the simulated Redis and index.

The real Reconciler talks to redis.asyncio and AsyncOpenSearch directly (no port),
so this restates its steps command by command on the models, with the same pure
part (consumer.reconcile.due_snapshots) and the same keys: HGETALL reconcile; if a
snapshot is pending, every partition's applied frontier; for each due snapshot T:
SET reconcile:lock NX PX, HGET reconcile T (still pending?), the deletes of every
document below T at version T (tests.sim.index.IndexModel.delete_older_than; the
scroll's pages and bulks as one step), HSET reconcile T done, then the
lock's release script. Redis calls fail and lose replies as every simulated call
does (tests.sim.services.SimProcess); OpenSearch down fails the delete (the
reconcile stays pending and is retried at the next tick, as the worker's chore
does). tests/integration/test_sim_contract.py runs the real Reconciler and this one
through the same check.
"""

from __future__ import annotations

import asyncio

from opensearchpy import ConnectionError as OpenSearchConnectionError

from searchsync.common.keys import RECONCILE_DONE, RECONCILE_PENDING
from searchsync.consumer.reconcile import LOCK_TTL_MS, due_snapshots

from .services import SimProcess
from .world import World

__all__ = ["SimReconciler"]


class SimReconciler:
    """Runs due reconciles for the view; any number of consumers may call :meth:`run_due`."""

    def __init__(self, world: World, process: SimProcess) -> None:
        self.world = world
        self.process = process
        self.redis = world.redis
        self.keys = world.keys
        self.me = process.name

    async def run_due(self) -> list[int]:
        """Every due reconcile this process can lock; the snapshot ts done. Raises
        RedisConnectionError or opensearchpy.ConnectionError (retried next tick)."""
        process, keys = self.process, self.keys
        # the idle check (every tick of every consumer) neither fails nor takes time
        # here: when it would fail the chore only logs and retries, nothing changes, and
        # drawing no randomness for it keeps the rest of a seed's schedule as it was
        await process.gate()
        states = dict(self.redis.hash(keys.reconcile))
        if RECONCILE_PENDING not in states.values():
            return []
        await process.enter("read applied")
        # the frontiers the simulated stores wrote (common.partition_state.read_applied's
        # shape), whichever Redis keys the layout gives them
        applied = {
            f"p{partition}".encode(): str(frontier).encode()
            for partition, frontier in self.world.checker.applied.items()
        }
        await process.leave("read applied")
        done = []
        for ts in due_snapshots(states, applied, keys.partitions):
            if await self._run_locked(ts):
                done.append(ts)
        return done

    async def _run_locked(self, ts: int) -> bool:
        process, lock = self.process, self.keys.reconcile_lock
        await process.enter("SET reconcile:lock NX")
        got = self.redis.get(lock) is None
        if got:
            self.redis.set_px(lock, self.me, LOCK_TTL_MS)
        await process.leave("SET reconcile:lock NX")
        if not got:
            return False
        killed = False
        try:
            await process.enter("HGET reconcile")
            state = self.redis.hash(self.keys.reconcile).get(str(ts).encode())
            await process.leave("HGET reconcile")
            if state != RECONCILE_PENDING:
                return False
            await process.gate()
            if self.world.faults.os_down:
                raise OpenSearchConnectionError("N/A", "sim: OpenSearch down", None)
            deleted = self.world.index.delete_older_than(ts)
            self.world.note(f"{self.me} reconcile {ts}: deleted {deleted}")
            self.world.checker.on_reconcile(ts, deleted)
            await process.enter("HSET reconcile done")
            self.redis.hash(self.keys.reconcile)[str(ts).encode()] = RECONCILE_DONE
            await process.leave("HSET reconcile done")
            return True
        except asyncio.CancelledError:
            killed = True  # kill -9 releases nothing: the lock expires after LOCK_TTL_MS
            raise
        finally:
            # the release script: delete the lock only while it is ours
            if not killed and self.redis.get(lock) == self.me:
                self.redis.delete(lock)
