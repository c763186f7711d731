"""A simulated consumer process: consumer.worker.Worker's own rebalancing and runners.

:class:`SimWorker` is a Worker whose leases, stream store, index sink and clock
are the simulated ones (tests.sim.services); its membership tick runs the
worker's own ``_rebalance`` / ``_drop_unvouched`` / ``_reap`` / ``_shutdown``.
The tick's housekeeping simulated: the reconcile after a snapshot that replaced
lost history (tests.sim.reconcile.SimReconciler, in the background as the worker's
chore). Not simulated: retention of the owned partitions, resync dual writes,
retired indexes; the schedule trims streams itself (tests.sim.schedule).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from searchsync.common.logs import LogGate
from searchsync.consumer.adapters import retry_policy
from searchsync.consumer.attempts import new_token
from searchsync.consumer.leases import tick_seconds
from searchsync.consumer.metrics import ConsumerMetrics
from searchsync.consumer.runner import BLOCKED_LOG_SECONDS, PartitionRunner, RunnerDeps
from searchsync.consumer.worker import Worker

from .reconcile import SimReconciler
from .services import SimLeases, SimProcess, SimSink, SimStreamStore
from .world import World

__all__ = ["SimConsumer", "SimWorker"]


class SimWorker(Worker):
    def __init__(self, world: World, process: SimProcess, runner: type[PartitionRunner]) -> None:
        # not Worker.__init__: that one wires Redis and OpenSearch clients
        settings = world.settings
        self.settings = settings
        self.me = process.name
        self.keys = world.keys
        self.metrics = ConsumerMetrics(CollectorRegistry(auto_describe=False), self.me)
        self.leases = SimLeases(world, process)
        self.deps = RunnerDeps(
            settings=settings,
            store=SimStreamStore(world, process),
            sink=SimSink(world, process),
            clock=world.clock,
            me=self.me,
            metrics=self.metrics,
            policy=retry_policy(settings),
            token=new_token(self.me),
            gate=LogGate(BLOCKED_LOG_SECONDS),
        )
        self.runners = {}
        self.tasks = {}
        self.retiring = set()
        self._chores = {}
        self._fatal = None
        guess = world.first_read_guess  # the simulator's first-read guess (World)
        self._runner_class = (
            runner
            if guess is None
            else type(runner.__name__, (runner,), {"first_read_changes_per_entry": guess})
        )

    def _start(self, partition: int) -> None:
        # Worker._start with the runner class of the schedule (a planted bug, or the real one)
        runner = self._runner_class(self.deps, partition)
        self.runners[partition] = runner
        self.tasks[partition] = asyncio.create_task(runner.run(), name=f"{self.me}-p{partition}")
        self.metrics.owns(partition, True)


class SimConsumer:
    """One consumer process: ticks until stopped (clean leave) or crashed."""

    def __init__(self, world: World, name: str, runner: type[PartitionRunner]) -> None:
        self.world = world
        self.name = name
        self.process = SimProcess(world, name)
        self.worker = SimWorker(world, self.process, runner)
        self.reconciler = SimReconciler(world, self.process)
        self.stop = asyncio.Event()
        self.crashed = False
        self.task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        worker = self.worker
        interval = tick_seconds(self.world.settings.lease_ttl_seconds)
        try:
            while not self.stop.is_set() and worker._fatal is None:
                await self.process.gate()
                try:
                    await worker._rebalance()
                except RedisError:
                    worker._drop_unvouched()
                worker._reap()
                worker._chore("reconcile", self.reconciler.run_due())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), interval)
        finally:
            if not self.crashed:
                await worker._shutdown()

    def crash(self) -> None:
        """kill -9: every task ends where it is, nothing is released."""
        self.crashed = True
        self.world.note(f"{self.name} CRASH")
        for task in [self.task, *self.worker.tasks.values(), *self.worker._chores.values()]:
            task.cancel()

    def pause(self, seconds: float) -> None:
        self.world.note(f"{self.name} PAUSE {seconds:.2f}s")
        self.process.paused_until = max(self.process.paused_until, self.world.loop.now + seconds)

    def leave(self) -> None:
        self.world.note(f"{self.name} LEAVE")
        self.stop.set()

    @property
    def alive(self) -> bool:
        return not self.crashed and not self.task.done()
