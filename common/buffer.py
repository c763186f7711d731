"""The buffer the runbook's backpressure talks about, counted in changes.

Entries may carry several changes (``b`` entries), so XINFO's entry counts are
not the buffer. The producer adds each entry's change count to ``written:p<N>``
(in the XADD pipeline) and consumers add what they acknowledge to
``acked:p<N>`` (in the XACK pipeline), both in the ``counts`` hash. Counters can
drift (a crash between XADD and HINCRBY, an operator's replay); XINFO corrects
them: a partition with nothing outstanding has an empty buffer, whatever the
counters say.
"""

from __future__ import annotations

__all__ = ["partition_buffer"]


def partition_buffer(written: int, acked: int, outstanding_entries: int) -> int:
    """Changes of one partition not yet acknowledged by the consumer group.

    ``outstanding_entries`` is XINFO GROUPS ``lag`` + ``pending`` for the group.
    Every outstanding entry holds at least one change, so that is a lower bound;
    zero outstanding entries means an empty buffer.
    """
    if outstanding_entries <= 0:
        return 0
    return max(written - acked, outstanding_entries)
