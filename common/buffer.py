"""The buffer the runbook's backpressure talks about, counted in changes.

Entries may carry several changes (``b`` entries), so XINFO's entry counts are
not the buffer. The producer adds each entry's change count to ``written:p<N>``
(in the XADD pipeline) and consumers add what they acknowledge to
``acked:p<N>`` (in the XACK pipeline), both in the ``counts`` hash. Counters can
drift (a crash between XADD and HINCRBY, an operator's replay); XINFO corrects
them: a partition with nothing outstanding has an empty buffer, whatever the
counters say, and one with pending entries holds at least that many changes.

XINFO GROUPS' ``lag`` only says whether anything is undelivered, never how much:
after Redis restarts from a rewritten AOF, 7.0 reports a lag of every entry
written since the rewrite although all of them were delivered and acknowledged
(its ``entries-read`` goes back; tests/faults/test_buffer_after_redis_restart.py).
Taken as a count, that phantom lag kept backpressure on for good (found by the
chaos run).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BufferReading", "partition_buffer"]


@dataclass(frozen=True, slots=True)
class BufferReading:
    """One measurement: changes not acknowledged per partition, and dead letters stored."""

    partitions: tuple[int, ...]
    dead_letters: int

    @property
    def total(self) -> int:
        return sum(self.partitions)


def partition_buffer(written: int, acked: int, pending: int, lag: int | None) -> int:
    """Changes of one partition not yet acknowledged by the consumer group.

    ``pending`` and ``lag`` are XINFO GROUPS' for the group (``lag`` None: Redis
    cannot tell). Nothing pending and nothing undelivered is an empty buffer;
    otherwise the counters say how many changes, and every pending entry holds at
    least one. ``lag`` counts only as "something is undelivered" (module docstring).
    """
    if pending <= 0 and lag is not None and lag <= 0:
        return 0
    return max(written - acked, pending, 0)
