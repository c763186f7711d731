"""The seams between a partition runner and the services it talks to.

consumer.runner decides *what* to read, send, acknowledge and when the applied
frontier may move; these protocols are *how*: a stream store (Redis Streams, the
consumer group, the lease fence, the attempts hash, the high-water mark), an
index sink (OpenSearch ``_bulk``) and a clock. consumer.adapters builds the real
ones from Redis and OpenSearch clients, in one place; tests/sim has in-memory ones
with a simulated clock, checked against the real services by one contract suite
(tests/integration/test_sim_contract.py), so the deterministic simulator
(``python -m tests.sim``) runs the same runner code as production.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from ..common.entries import Change, DeadLetter
from .batch import RawEntry
from .bulk import ItemResult

__all__ = ["Clock", "IndexSink", "LeaseStore", "StreamStore"]


class Clock(Protocol):
    """Time as the runner sees it: ``monotonic`` for intervals, ``time`` for wall-clock ages."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class StreamStore(Protocol):
    """One consumer's view of the partitioned streams of one view, per partition.

    Every method is one round trip or pipeline (a few for the claims) and raises
    redis.exceptions.RedisError on connection trouble; then the command may or
    may not have run, and the runner starts over from the pending entries.
    """

    async def read_new(self, partition: int, count: int, *, block: bool) -> list[RawEntry]:
        """Up to ``count`` never-delivered entries (XREADGROUP ``>``); ``block`` waits a
        little (consumer.reader.READ_BLOCK_MS) for the first one."""
        ...

    async def claim_pending(
        self, partition: int, count: int, cursor: bytes
    ) -> tuple[bytes, list[RawEntry]]:
        """Take over up to ``count`` pending entries from ``cursor`` on (XAUTOCLAIM); the
        next cursor is ``0-0`` once the pending list was scanned."""
        ...

    async def claim_ids(self, partition: int, ids: Sequence[bytes]) -> list[RawEntry]:
        """Take over the pending entries ``ids`` (XCLAIM); trimmed ones are left out."""
        ...

    async def pending_count(self, partition: int) -> int:
        """Entries pending in the group under any consumer."""
        ...

    async def pending_below(self, partition: int, entry_id: bytes, count: int) -> list[bytes]:
        """Ids of up to ``count`` entries below ``entry_id`` pending under any consumer."""
        ...

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
        """Dead letters, the partition's snapshot ``floor`` raised (if given), XACK, acked
        counter, attempts of the bulk just answered, and the ids still pending below
        ``check_below`` (consumer.acks.Acker.settle)."""
        ...

    async def snapshot_floor(self, partition: int) -> int | None:
        """The highest reconcile marker ts the partition has acknowledged; None for none."""
        ...

    async def advance(self, partition: int, applied_ts: int) -> None:
        """Raise the partition's applied frontier (never lowers it)."""
        ...

    async def fence(self, partition: int, token: str, entry_ids: Iterable[bytes] = ()) -> bool:
        """Check-and-extend the lease right before a write, marking ``entry_ids`` in flight;
        False when the lease is no longer ours (consumer.leases.Leases.fence)."""
        ...

    async def recover_attempts(self, partition: int, token: str) -> int:
        """Count the in-flight markers other runners left (consumer.attempts)."""
        ...

    async def ts_bound(self, highest_ts: int) -> int:
        """The highest ts an entry may carry, covering ``highest_ts`` if the producer
        announced it (consumer.highwater)."""
        ...

    async def set_blocked(self, partition: int, state: str, ttl_ms: int) -> None:
        """Record why OpenSearch refuses the partition's writes (``blocked:p<N>``)."""
        ...

    async def clear_blocked(self, partition: int) -> None: ...


class LeaseStore(Protocol):
    """Membership heartbeats and partition leases of one consumer (consumer.leases).

    Each call is one round trip or pipeline and raises redis.exceptions.RedisError on
    connection trouble; ``ttl_ms`` is how long a lease or heartbeat stays valid.
    """

    ttl_ms: int

    async def heartbeat(self) -> tuple[int, dict[str, float]]:
        """Record that this consumer is alive; the server's now (ms) and every recent beat."""
        ...

    async def acquire(self, partition: int) -> bool:
        """Take the lease if it is free or ours already."""
        ...

    async def renew(self, partitions: Iterable[int]) -> set[int]:
        """Extend the leases of ``partitions``; those still ours."""
        ...

    def expired(self, partition: int, now: float | None = None) -> bool:
        """True once no successful renewal vouches for the lease (local clock, no I/O)."""
        ...

    async def release(self, partition: int) -> None:
        """Give the partition up if it is still ours."""
        ...

    async def leave(self, partitions: Iterable[int]) -> None:
        """Release ``partitions`` and leave the members (a clean shutdown)."""
        ...


class IndexSink(Protocol):
    """Where changes are indexed (OpenSearch ``_bulk`` through the alias, external versions)."""

    async def send(self, changes: Sequence[Change]) -> Sequence[ItemResult]:
        """One result per change, in order; raises consumer.sender.BulkFailed when the
        request as a whole failed (then it may or may not have been applied)."""
        ...

    async def answers(self) -> bool:
        """Whether the index answers at all (a probe after a request got no answer)."""
        ...
