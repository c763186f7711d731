"""The consumer process: membership ticks, partition runners, housekeeping, shutdown.

Every tick (a fifth of LEASE_TTL_SECONDS, at most 1 s) the worker heartbeats,
computes the partitions it should own from the live members
(consumer.membership), renews the leases it holds, stops runners whose lease is
gone, retires runners of partitions that now belong to someone else (they settle
their batch, then the lease is released), and acquires leases of partitions it
should own. So a partition moves within LEASE_TTL_SECONDS of a death (lease
expiry plus one tick, see consumer.leases) and within about two ticks of a join
or a clean leave.

Housekeeping rides on the same tick: due reconciles, stream retention of owned
partitions and of the dead-letter stream, the buffer gauge and log line, and
indexes a resync retired once their grace is over (common.retired). Each tick
first reads the resync's record (consumer.dualwrite): while a resync runs, every
bulk also goes to the new index.

At start the worker checks the stream layout (common.meta: a different
STREAM_PARTITIONS or KEY_COLUMN than the streams were created with stops it)
and the index layout (common.index: a concrete index named like the alias, or an
alias without a write index, stops it with a message that names the fix). A
runner that meets the same index problem later stops the whole consumer too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from opensearchpy import AsyncOpenSearch, RequestError, TransportError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..common.config import Settings
from ..common.errors import FatalError, is_transient
from ..common.index import ensure_index
from ..common.keys import Keys
from ..common.meta import ensure_meta
from ..common.opensearch import explain
from ..common.retired import SWEEP_SECONDS, sweep_retired
from ..common.streams import ensure_groups
from ..common.views import view_properties
from .adapters import runner_deps
from .attempts import prune
from .dualwrite import DualWrite
from .leases import Leases, tick_seconds
from .membership import desired_partitions, live_members
from .metrics import ConsumerMetrics
from .ports import LeaseStore
from .reconcile import Reconciler
from .retention import trim, trim_dlq
from .runner import PartitionRunner

__all__ = ["SHUTDOWN_GRACE_SECONDS", "Worker"]

log = logging.getLogger(__name__)

# Runners get this long to settle their batch on SIGTERM; the process must be gone in 10 s.
SHUTDOWN_GRACE_SECONDS: Final = 7.0
RETENTION_INTERVAL_SECONDS: Final = 60.0


class Worker:
    """One consumer process; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        client: AsyncOpenSearch,
        metrics: ConsumerMetrics,
    ) -> None:
        self.settings = settings
        self.me = settings.consumer_identity()
        self.keys = Keys(settings.view_name, settings.stream_partitions)
        self.redis = redis
        self.client = client
        self.metrics = metrics
        leases = Leases(redis, self.keys, self.me, settings.lease_ttl_seconds)
        # membership and leases through the port (consumer.ports), so the simulator in
        # tests/sim can drive this worker's rebalancing against its in-memory model
        self.leases: LeaseStore = leases
        # the resync in progress, if any (consumer.dualwrite); read every tick
        self.dual = DualWrite(redis, self.keys, self.me)
        self.deps = runner_deps(
            settings, redis, client, metrics, keys=self.keys, leases=leases, dual=self.dual
        )
        self.reconciler = Reconciler(
            redis, client, self.keys, settings.os_index_name, self.me, dual=self.dual
        )
        self.runners: dict[int, PartitionRunner] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.retiring: set[int] = set()
        self._chores: dict[str, asyncio.Task[None]] = {}
        self._last_retention = 0.0
        self._last_retired_sweep = 0.0
        self._last_buffer_log = time.monotonic()
        # a runner's FatalError: the consumer shuts down and run() raises it
        self._fatal: FatalError | None = None

    # lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Prepare, tick until ``stop``, then shut down cleanly (within ~8 s).

        Raises FatalError when the index cannot be created as specified or cannot
        be written through the alias (common.index.IndexLayoutError), and
        common.meta.StreamLayoutError when the settings disagree with the streams.
        """
        if not await self._prepare(stop):
            return
        log.info(
            "Consumer %s started: view %s, %d partitions, group %s, index alias %s",
            self.me,
            self.settings.view_name,
            self.settings.stream_partitions,
            self.settings.consumer_group,
            self.settings.os_index_name,
        )
        interval = tick_seconds(self.settings.lease_ttl_seconds)
        try:
            while not stop.is_set() and self._fatal is None:
                await self._tick()
                if self._fatal is not None:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self._shutdown()
        if self._fatal is not None:
            raise self._fatal

    async def _prepare(self, stop: asyncio.Event) -> bool:
        """Layout check, consumer groups and index bootstrap, retried with backoff; False
        if stopped first. Raises StreamLayoutError, FatalError."""
        await self._until_done(stop, "check the stream layout", self._ensure_meta)
        if stop.is_set():
            return False
        await self._until_done(stop, "create consumer groups", self._ensure_groups)
        if stop.is_set():
            return False
        await self._until_done(stop, "bootstrap the index", self._ensure_index)
        return not stop.is_set()

    async def _ensure_meta(self) -> None:
        await ensure_meta(self.redis, self.keys, self.settings)

    async def _ensure_groups(self) -> None:
        await ensure_groups(self.redis, self.keys, self.settings.consumer_group)

    async def _ensure_index(self) -> None:
        settings = self.settings
        try:
            await ensure_index(
                self.client,
                settings.os_index_name,
                retention_seconds=settings.stream_retention_seconds,
                replicas=settings.os_index_replicas,
                refresh_interval=settings.os_refresh_interval,
                properties=view_properties(settings),  # INDEX_MAPPING, checked at start
            )
        except RequestError as error:
            raise FatalError(f"OpenSearch refused the index definition: {error}") from error

    async def _until_done(
        self, stop: asyncio.Event, what: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        backoff = self.deps.policy.backoff()
        while not stop.is_set():
            try:
                await step()
                return
            except Exception as error:
                if not is_transient(error):  # common.errors; e.g. StreamLayoutError
                    raise
                delay = backoff.next_delay()
                # an OpenSearch error names OpenSearch, its address and the setting to check
                reason = (
                    explain(self.settings, error) if isinstance(error, TransportError) else error
                )
                log.warning("Could not %s, retrying in %.1fs: %s", what, delay, reason)
                dependency = "Redis" if isinstance(error, RedisError) else "OpenSearch"
                self.metrics.health.failed(dependency, str(error) or type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _shutdown(self) -> None:
        for runner in self.runners.values():
            runner.stopping.set()
        tasks = list(self.tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for chore in self._chores.values():
            chore.cancel()
        await asyncio.gather(*self._chores.values(), return_exceptions=True)
        try:
            await self.leases.leave(list(self.runners))
        except RedisError as error:
            log.warning(
                "Could not release leases on shutdown (they expire on their own): %s", error
            )
        for partition in self.runners:
            self.metrics.owns(partition, False)
        self.runners.clear()
        self.tasks.clear()

    # the tick

    async def _tick(self) -> None:
        health = self.metrics.health
        try:
            # before any runner starts: a consumer started during a resync dual-writes
            # from its first bulk
            await self.dual.refresh()
            await self._rebalance()
            health.answered("Redis")
        except RedisError as error:
            log.warning("Membership tick failed: %s", error)
            health.failed("Redis", str(error) or type(error).__name__)
            self._drop_unvouched()
        self._reap()
        self._housekeeping()

    async def _rebalance(self) -> None:
        now_ms, beats = await self.leases.heartbeat()
        members = live_members(beats, now_ms, self.leases.ttl_ms)
        desired = desired_partitions(self.settings.stream_partitions, members, self.me)
        held = await self.leases.renew(list(self.runners))
        for partition in set(self.runners) - held:
            self._drop(partition)
        for partition in set(self.runners) - desired - self.retiring:
            self._retire(partition)
        for partition in sorted(desired - set(self.runners)):
            if await self.leases.acquire(partition):
                self._start(partition)

    def _start(self, partition: int) -> None:
        runner = PartitionRunner(self.deps, partition)
        self.runners[partition] = runner
        self.tasks[partition] = asyncio.create_task(runner.run(), name=f"partition-p{partition}")
        self.metrics.owns(partition, True)
        log.info("Acquired partition p%d", partition)

    def _retire(self, partition: int) -> None:
        """Let the runner settle its batch; the lease is released once it has ended."""
        self.retiring.add(partition)
        self.runners[partition].stopping.set()
        log.info("Handing partition p%d over to another consumer", partition)

    def _drop(self, partition: int) -> None:
        """The lease is gone: stop at once, acknowledge nothing more."""
        log.warning("Lease of partition p%d lost; stopping its runner", partition)
        self.tasks[partition].cancel()
        self._forget(partition)

    def _drop_unvouched(self) -> None:
        """Without Redis, stop partitions whose last renewal no longer covers us."""
        for partition in list(self.runners):
            if self.leases.expired(partition):
                self._drop(partition)

    def _forget(self, partition: int) -> None:
        self.runners.pop(partition, None)
        self.tasks.pop(partition, None)
        self.retiring.discard(partition)
        self.metrics.owns(partition, False)

    def _reap(self) -> None:
        """Release the leases of retired runners that ended; restart ones that ended early;
        note a runner's FatalError (the consumer then stops)."""
        for partition, task in list(self.tasks.items()):
            if not task.done():
                continue
            error = None if task.cancelled() else task.exception()
            if isinstance(error, FatalError) and self._fatal is None:
                self._fatal = error
            elif error is not None:
                log.error("Runner of partition p%d ended with %r", partition, error)
            if partition in self.retiring:
                self._forget(partition)
                self._chore(f"release-p{partition}", self.leases.release(partition))
            else:
                # ended on its own (lease found gone by its fence): re-acquire if still ours
                self._forget(partition)

    # housekeeping

    def _housekeeping(self) -> None:
        in_hand = sum(runner.in_hand for runner in self.runners.values())
        self.metrics.buffer.set(in_hand)
        self.metrics.health.waiting(f"{in_hand} changes in hand" if in_hand else "")
        self._chore("reconcile", self.reconciler.run_due())
        now = time.monotonic()
        if now - self._last_retention >= RETENTION_INTERVAL_SECONDS and self.runners:
            self._last_retention = now
            self._chore("retention", self._trim_owned(sorted(self.runners)))
            self._chore("dlq retention", self._trim_dlq())
        if now - self._last_retired_sweep >= SWEEP_SECONDS:
            self._last_retired_sweep = now
            self._chore("retired indexes", self._sweep_retired())
        if now - self._last_buffer_log >= self.settings.buffer_log_seconds:
            self._last_buffer_log = now
            log.info(
                "Consumer buffer: %d changes in hand on partitions %s",
                sum(runner.in_hand for runner in self.runners.values()),
                ",".join(f"p{p}" for p in sorted(self.runners)) or "none",
            )

    def _chore(self, name: str, work: Awaitable[object]) -> None:
        """Run ``work`` in the background unless a chore of that name is still running."""
        running = self._chores.get(name)
        if running is not None and not running.done():
            if asyncio.iscoroutine(work):
                work.close()
            return
        self._chores[name] = asyncio.create_task(self._logged(name, work), name=name)

    @staticmethod
    async def _logged(name: str, work: Awaitable[object]) -> None:
        try:
            await work
        except (RedisError, TransportError) as error:
            log.warning("%s failed, will retry: %s", name, error)
        except Exception:
            log.exception("%s failed", name)

    async def _trim_owned(self, partitions: list[int]) -> None:
        for partition in partitions:
            removed = await trim(
                self.redis,
                self.keys.stream(partition),
                self.settings.consumer_group,
                self.settings.stream_retention_seconds,
            )
            if removed:
                log.info("Trimmed %d retained entries from p%d", removed, partition)
            await prune(
                self.redis,
                self.keys.stream(partition),
                self.settings.consumer_group,
                self.keys.attempts(partition),
            )

    async def _sweep_retired(self) -> None:
        now_ms = int(time.time() * 1000)
        keys, alias = self.keys, self.settings.os_index_name
        await sweep_retired(self.redis, self.client, keys, alias, now_ms)

    async def _trim_dlq(self) -> None:
        removed = await trim_dlq(self.redis, self.keys.dlq, self.settings.dlq_retention_seconds)
        if removed:
            log.info(
                "Trimmed %d dead letters older than DLQ_RETENTION_SECONDS=%d",
                removed,
                self.settings.dlq_retention_seconds,
            )
