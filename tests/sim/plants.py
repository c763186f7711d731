"""Bugs planted on purpose, to show the simulator finds them (tests/sim/test_simulator.py).

Each is a PartitionRunner (consumer side), a SubscribeSession or a Poller (producer side)
with one rule of the protocol broken; the schedule runs it instead of the real one
(``python -m tests.sim --plant NAME``).
"""

from __future__ import annotations

from typing import Any

from searchsync.consumer.batch import Batch
from searchsync.consumer.runner import PartitionRunner
from searchsync.producer.polling import Poller, PollPlan, RowScan, Step
from searchsync.producer.resume import StartPlan
from searchsync.producer.session import SubscribeSession

__all__ = [
    "PLANTS",
    "POLLER_PLANTS",
    "PRODUCER_PLANTS",
    "AckBeforeBulk",
    "CheckpointBeforeWrite",
    "FrontierWithoutStrayCheck",
    "MarkersBeforePending",
    "PollMarkersBeforePending",
    "ProgressBeforeFence",
    "ReconcileAtFrontier",
    "RememberBeforeWrite",
    "ResumeAtCheckpoint",
    "SkipReconcileMarker",
    "UnfencedDigests",
    "WriteWithoutInvalidate",
]


class AckBeforeBulk(PartitionRunner):
    """Acknowledges a batch's entries before sending them to OpenSearch."""

    async def _process(self, batch: Batch) -> None:
        await self.store.settle(self.partition, [e.id for e in batch.entries], 0)
        await super()._process(batch)


class FrontierWithoutStrayCheck(PartitionRunner):
    """Writes a progress entry's frontier without checking what is pending below it
    (entries a paused previous owner read behind this runner's back)."""

    async def _advance(self, ts: int, progress: bytes, strays: list[bytes]) -> None:
        await super()._advance(ts, progress, [])


PLANTS: dict[str, type[PartitionRunner]] = {
    "ack-before-bulk": AckBeforeBulk,
    "frontier-without-stray-check": FrontierWithoutStrayCheck,
}


class CheckpointBeforeWrite(SubscribeSession):
    """Moves the checkpoint before it writes the batch the checkpoint covers."""

    async def _apply(self, batch: Any, frontier: int | None, *rest: Any) -> None:
        if frontier is not None:
            await self._writer.commit(frontier)
        await super()._apply(batch, None, *rest)


class ResumeAtCheckpoint(SubscribeSession):
    """Resumes AS OF the checkpoint F instead of F - 1: Materialize folds F's changes
    into the snapshot at F, which a resume reads without writing."""

    async def run(self, plan: StartPlan) -> None:
        if plan.as_of is not None and not plan.write_snapshot:
            plan = plan._replace(as_of=plan.as_of + 1)
        await super().run(plan)


class SkipReconcileMarker(SubscribeSession):
    """Writes the snapshot that replaces a refused AS OF's lost history without the
    reconcile marker: documents deleted while the producer was away stay indexed."""

    async def _finish_snapshot(self, snapshot: Any, plan: StartPlan) -> None:
        await super()._finish_snapshot(snapshot, plan._replace(reconcile=False))


class ReconcileAtFrontier(SubscribeSession):
    """Marks the reconcile at the frontier the snapshot's batch checkpoints instead of
    the snapshot's own ts: the reconcile deletes the snapshot's documents too."""

    async def _apply(
        self, batch: Any, frontier: int | None, snapshot: Any, plan: StartPlan
    ) -> None:
        if snapshot is not None and plan.reconcile:
            wrong = frontier if frontier is not None else snapshot.as_of + 1
            snapshot = snapshot._replace(as_of=wrong)
        await super()._apply(batch, frontier, snapshot, plan)


class ProgressBeforeFence(SubscribeSession):
    """Commits as producer.writer did before seed 74465's fix: the progress entries (and
    the high-water mark for them) before the fenced checkpoint script, so a producer
    paused past its lease writes progress above the mark its successor read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        setattr(self._writer, "progress_first", True)  # noqa: B010 (tests.sim's sink only)


class MarkersBeforePending(SubscribeSession):
    """Writes a snapshot's reconcile markers before reconcile[ts] = pending, as
    producer.writer did before seed 196's fix: killed in between, the markers raise the
    snapshot floor (consumers settle changes below it unsent) and no reconcile runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        setattr(self._writer, "markers_first", True)  # noqa: B010 (tests.sim's sink only)


PRODUCER_PLANTS: dict[str, type[SubscribeSession]] = {
    "markers-before-pending": MarkersBeforePending,
    "progress-before-fence": ProgressBeforeFence,
    "checkpoint-before-write": CheckpointBeforeWrite,
    "resume-at-checkpoint": ResumeAtCheckpoint,
    "skip-reconcile-marker": SkipReconcileMarker,
    "reconcile-at-frontier": ReconcileAtFrontier,
}


class RememberBeforeWrite(Poller):
    """Stores a poll's new digests before it writes the entries they stand for."""

    async def _run(self, step: Step, plan: PollPlan, scan: RowScan) -> None:
        if step == "write":
            await super()._run("remember", plan, scan)
        elif step == "remember":
            return
        await super()._run(step, plan, scan)


class WriteWithoutInvalidate(Poller):
    """Writes a poll's changes without first marking their keys as being written."""

    async def _run(self, step: Step, plan: PollPlan, scan: RowScan) -> None:
        if step != "invalidate":
            await super()._run(step, plan, scan)


class UnfencedDigests(Poller):
    """Stores its digests whether or not it still holds the producer lease, as
    producer.adapters.RedisDigestStore did before seed 350's fix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        setattr(self._store, "_lease", None)  # noqa: B010 (tests.sim's digest store only)


class PollMarkersBeforePending(Poller):
    """:class:`MarkersBeforePending` in a polling producer (a full poll's marker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        setattr(self._writer, "markers_first", True)  # noqa: B010 (tests.sim's sink only)


POLLER_PLANTS: dict[str, type[Poller]] = {
    "poll-markers-before-pending": PollMarkersBeforePending,
    "unfenced-digests": UnfencedDigests,
    "remember-before-write": RememberBeforeWrite,
    "write-without-invalidate": WriteWithoutInvalidate,
}
