"""The buffer the runbook's backpressure talks about, counted in changes.

The one definition of "outstanding changes": the producer's backpressure
(producer.backpressure) and ``searchsync status`` (common.status) both compute
it with :func:`outstanding_changes` from the same Redis answers, so the status
shows the figure the producer pauses on.

Entries may carry several changes (``b`` entries), so XINFO's entry counts are
not the buffer. The producer adds each entry's change count to ``written:p<N>``
(in the XADD pipeline) and consumers add what they acknowledge to
``acked:p<N>`` (in the XACK pipeline), both in the ``counts`` hash. Counters can
drift (a crash between XADD and HINCRBY, an operator's replay); XINFO corrects
them: a partition with nothing outstanding has an empty buffer, whatever the
counters say, and one with pending entries counts at least one change each. A
progress entry carries none, so while a consumer holds one (read, not yet
acknowledged: milliseconds, every 100 ms a partition) an idle partition reads 1;
the price of never letting drifted counters hide a pending change.

XINFO GROUPS' ``lag`` only says whether anything is undelivered, never how much:
after Redis restarts from a rewritten AOF, 7.0 reports a lag of every entry
written since the rewrite although all of them were delivered and acknowledged
(its ``entries-read`` goes back; tests/faults/test_buffer_after_redis_restart.py).
Taken as a count, that phantom lag kept backpressure on for good (found by the
chaos run).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .keys import Keys

__all__ = ["BufferReading", "group_info", "outstanding_changes", "partition_buffer"]


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


def group_info(groups: Iterable[Mapping[str, Any]] | None, group: str) -> Mapping[str, Any] | None:
    """The entry of ``group`` in one stream's XINFO GROUPS reply (names as bytes or
    str); None when the stream or the group does not exist."""
    for info in groups or ():
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return info
    return None


def outstanding_changes(
    counts: Mapping[bytes, bytes], partition: int, info: Mapping[str, Any] | None, length: int
) -> int:
    """Changes of ``partition`` the group has not acknowledged: the buffer.

    ``counts`` is the ``counts`` hash (HGETALL), ``info`` the group's XINFO GROUPS
    entry (:func:`group_info`; None: no group yet) and ``length`` the stream's XLEN.
    Without a group nothing was delivered: every entry is outstanding, at least one
    change each, and the counters say how many changes. With one,
    :func:`partition_buffer`.
    """
    written = int(counts.get(Keys.written_field(partition).encode(), 0))
    acked = int(counts.get(Keys.acked_field(partition).encode(), 0))
    if info is None:
        return max(written - acked, length, 0)
    lag = info.get("lag")  # nil when Redis cannot compute it (entries trimmed past the group)
    pending = int(info.get("pending") or 0)
    return partition_buffer(written, acked, pending, None if lag is None else int(lag))
