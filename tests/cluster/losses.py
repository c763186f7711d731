"""What a Redis master's failover lost from the partition streams, and what the producer
wrote again (tests/cluster/test_devstack_failover_under_load.py). Pure, over entries as
XRANGE returns them, so tests/unit/cluster checks the arithmetic without a cluster.

The test reads the master's streams (one XRANGE each) just before it kills the master, and
the promoted replica's once the pipeline has resumed. An entry of the master's (its id
at or below the last id read there) that the promoted node lacks was lost. The producer
WAITs for a replica after every round trip that adds entries and moves the checkpoint
past a change only once that round trip succeeded (producer/writer.py), so a lost
change below the checkpoint read just before the kill had been acknowledged: that breaks
the contract, unless another copy of it (an earlier replay's) is still there. A lost
change at or above that checkpoint may never have been acknowledged; the producer must
write it again: "recovered" is the same change (ts, key, document) at an id above the
last one read. Progress entries are never waited for (a lost one only delays the
frontier) and are counted apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from searchsync.common.entries import Change, EntryError, decode_entry

__all__ = ["FailoverLoss", "StreamEntry", "account_failover", "entry_id"]

# (id, fields) as redis-py's XRANGE returns them without decode_responses
StreamEntry = tuple[bytes, dict[bytes, bytes]]


def entry_id(raw: bytes) -> tuple[int, int]:
    """``b"1700000000000-3"`` → ``(1700000000000, 3)``: the order Redis gives ids."""
    ms, _, seq = raw.decode().partition("-")
    return int(ms), int(seq or 0)


@dataclass
class FailoverLoss:
    """One failover's account over every stream the killed master served."""

    read_entries: int = 0  # the master's entries read just before the kill
    lost_entries: dict[str, int] = field(default_factory=dict)  # by op (u, d, b, p, r)
    lost_changes: int = 0  # the data changes in the lost entries (a b entry's each)
    # lost, below the checkpoint read before the kill, no other copy kept: acknowledged
    # to the producer (its WAIT succeeded) and gone
    acknowledged_lost: int = 0
    kept_in_another_copy: int = 0  # lost, but an identical change at or below the last id
    recovered: int = 0  # lost, written again above the last id (the producer's replay)
    unrecovered: int = 0  # lost and nowhere on the promoted node
    # on the promoted node at or below the last id read, yet not on the master: none
    # unless something trimmed or the read was not one moment
    unknown_on_promoted: int = 0


def _changes(fields: Mapping[bytes, bytes]) -> tuple[str, list[Change]]:
    """The entry's op and data changes (none for a progress or reconcile marker)."""
    op = fields.get(b"op", b"?").decode(errors="replace")
    try:
        decoded = decode_entry(fields)
    except EntryError:
        return op, []
    return op, ([] if not isinstance(decoded, list) else decoded)


def account_failover(
    master: Mapping[str, Sequence[StreamEntry]],
    promoted: Mapping[str, Sequence[StreamEntry]],
    checkpoint: int,
) -> FailoverLoss:
    """The account of ``master`` (stream → its entries just before the kill) against
    ``promoted`` (stream → the promoted node's entries after the replay), given the
    producer's ``checkpoint`` read just before the kill."""
    loss = FailoverLoss()
    for stream, before in master.items():
        loss.read_entries += len(before)
        last = max((entry_id(i) for i, _ in before), default=(0, 0))
        after = promoted.get(stream, ())
        kept_ids = {i for i, _ in after if entry_id(i) <= last}
        read_ids = {i for i, _ in before}
        loss.unknown_on_promoted += len(kept_ids - read_ids)
        kept: set[Change] = set()
        rewritten: set[Change] = set()
        for i, fields in after:
            (kept if entry_id(i) <= last else rewritten).update(_changes(fields)[1])
        for i, fields in before:
            if i in kept_ids:
                continue
            op, changes = _changes(fields)
            loss.lost_entries[op] = loss.lost_entries.get(op, 0) + 1
            for change in changes:
                loss.lost_changes += 1
                if change in kept:
                    loss.kept_in_another_copy += 1
                    continue
                if change.ts < checkpoint:
                    loss.acknowledged_lost += 1
                if change in rewritten:
                    loss.recovered += 1
                else:
                    loss.unrecovered += 1
    return loss
