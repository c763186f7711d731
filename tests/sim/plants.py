"""Bugs planted on purpose, to show the simulator finds them (tests/sim/test_simulator.py).

Each is a PartitionRunner with one rule of the protocol broken; the schedule runs
it instead of the real runner (``python -m tests.sim --plant NAME``).
"""

from __future__ import annotations

from searchsync.consumer.batch import Batch
from searchsync.consumer.runner import PartitionRunner

__all__ = ["PLANTS", "AckBeforeBulk", "FrontierWithoutStrayCheck"]


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
