"""One partition's batch: entries read together, the changes to send, what is settled.

Pure, no I/O. Entries go in in stream order; a change superseded by a newer
change of the same key inside the batch is never sent (external versions would
make OpenSearch ignore it anyway; not sending it is cheaper). Entries that cannot
be sent at all (malformed, attempted too often, a document that would break the
NDJSON body) become dead letters here, before any request.

An entry is acknowledged once every change it holds is settled: applied,
superseded, or dead-lettered. :class:`Batch` keeps that bookkeeping so the worker
only moves items between "to send" and "settled".

Two checks happen here because only the entry can fail them. An entry whose
``ts`` is above the producer's high-water mark (the highest ts the producer has
announced before writing, common.keys ``high_water``) was not written by the
producer — someone XADDed it by hand — and a progress entry like that would move
the applied frontier past changes that are not indexed, for good: it goes to
the dlq, never into the frontier. A ``b`` entry with some unreadable fields
dead-letters those fields alone and sends the rest.

**The snapshot floor.** After a snapshot at T that replaced lost history, the
producer writes a reconcile marker ``r``@T to every partition, once every change
of the snapshot is in the streams; the reconcile then deletes every document below
T. A change below T is superseded by that snapshot: the snapshot holds every row
live at T (at version T, which wins over it anyway), and a key not live at T is
the reconcile's to delete. Sending it can only do harm: a producer paused past its
lease (a zombie) writing its batch after the marker and after the reconcile ran
would index a key deleted in the lost history, and no tombstone refuses it when
the key was never indexed (``python -m tests.sim --seed 334 --polling``). So a
change with ts below ``floor`` (the highest reconcile marker the partition has
settled, raised by each marker for the entries after it) is settled as superseded:
acknowledged, not sent, never dead-lettered; progress entries are untouched. The
same holds for old changes read again: ``searchsync replay`` re-delivers the
snapshot rows at T after any retained change below T (a partition's entries are
in ts order), so what it skips the snapshot rows restore. ``searchsync dlq retry``
is not affected: it writes the key as the view has it at a fresh Materialize
timestamp (common.dlq), above every marker written before. The applied frontier is
unchanged: a skipped change is settled like a sent one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..common.entries import (
    BATCH,
    COUNT,
    DELETE,
    KEY,
    OP,
    PROGRESS,
    TS,
    UPSERT,
    BadPart,
    Change,
    DeadLetter,
    EntryError,
    Marker,
    decode_entry_parts,
    raw_fields_json,
)
from .bulk import ACTION_OVERHEAD_BYTES, unsendable_reason

__all__ = [
    "Batch",
    "EntryState",
    "Item",
    "RawEntry",
    "chunked",
    "entries_to_read",
    "floor_of",
    "loose_ts",
    "should_flush",
]


class RawEntry(NamedTuple):
    """A stream entry as read, with how often it was attempted before (consumer.attempts:
    bulks that carried it and failed on it or never came back; 0 for a first read)."""

    id: bytes
    fields: dict[bytes, bytes]
    attempts: int


@dataclass(slots=True)
class EntryState:
    id: bytes
    ts: int  # 0 when the entry is too malformed to say
    changes: int  # counted into acked:p<N> when the entry is acknowledged
    open: int = 0  # items still waiting for a final outcome
    acked: bool = False
    reconcile: bool = False  # a reconcile marker: its ts raises the partition's floor


@dataclass(slots=True)
class Item:
    """One change to send, and the entry it came from."""

    change: Change
    entry: int  # index into Batch.entries
    deliveries: int  # the ordinal of the next attempt: attempts so far + 1 (consumer.attempts)


def entries_to_read(room: int, changes_per_entry: float) -> int:
    """How many entries to ask Redis for when ``room`` more changes fit in the batch.

    MAX_BATCH_SIZE counts changes, XREADGROUP/XAUTOCLAIM count entries, and a
    ``b`` entry holds up to 256 changes: asking for ``room`` entries could hand a
    consumer 256 × MAX_BATCH_SIZE documents at once (memory, and a `_bulk` over
    OpenSearch's 100 MB request limit). ``changes_per_entry`` is what the last
    read held on average; at least one entry is always read.
    """
    return max(1, int(room // max(1.0, changes_per_entry)))


def item_bytes(item: Item) -> int:
    """What ``item`` adds to a ``_bulk`` body, near enough to cap requests by size."""
    doc = item.change.doc
    return ACTION_OVERHEAD_BYTES + len(item.change.key) + (len(doc) + 1 if doc is not None else 0)


def chunked(items: list[Item], size: int, max_bytes: int | None = None) -> list[list[Item]]:
    """``items`` in order, in requests of at most ``size`` items and ``max_bytes`` bytes
    (a read can overshoot the batch size when entries grow larger than the last
    ones). An item larger than ``max_bytes`` goes alone: it cannot be made smaller."""
    step = max(1, size)
    out: list[list[Item]] = []
    current: list[Item] = []
    current_bytes = 0
    for item in items:
        weight = item_bytes(item) if max_bytes is not None else 0
        full = len(current) >= step or (
            max_bytes is not None and current and current_bytes + weight > max_bytes
        )
        if full:
            out.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += weight
    if current:
        out.append(current)
    return out


def should_flush(
    entries: int,
    changes: int,
    age_s: float,
    *,
    drained: bool,
    max_changes: int,
    max_age_s: float,
) -> bool:
    """The flush policy: full, old enough, or the stream has nothing more right now.

    Waiting for more when the stream is drained only adds latency (the runbook's
    target is p95 < 2 s), so a small batch goes out as soon as a read comes back
    short. A batch of markers only (no changes) still goes out: acknowledging
    progress entries is what moves the applied frontier.
    """
    if entries == 0:
        return False
    return drained or changes >= max_changes or age_s >= max_age_s


@dataclass(slots=True)
class Batch:
    """Entries of one partition read together, and the state of their changes.

    ``started`` is the caller's monotonic clock at creation; :meth:`age` uses the
    same clock.
    """

    partition: int
    max_deliveries: int
    started: float
    # the highest ts an entry may carry (the producer's high-water mark, see the module
    # docstring); None: no check
    ts_bound: int | None = None
    # changes below it are superseded by a snapshot (the module docstring): the highest
    # reconcile marker settled before the batch, raised by each marker added; None: no
    # marker yet (every ts is sent, even one a hand-written entry made negative)
    floor: int | None = None
    entries: list[EntryState] = field(default_factory=list)
    # newest change per key, in the order keys first appeared
    pending: dict[bytes, Item] = field(default_factory=dict)
    letters: list[tuple[int, DeadLetter]] = field(default_factory=list)
    progress_ts: int | None = None
    # id of the last progress entry: progress_ts is only true once nothing below it is pending
    progress_id: bytes | None = None
    reconcile_ts: list[int] = field(default_factory=list)
    changes: int = 0
    # settled without being sent (a newer change of the key came in the same batch)
    superseded_upserts: int = 0
    superseded_deletes: int = 0
    # of those, changes below the floor (superseded by a snapshot, not by a newer change)
    below_floor: int = 0

    def age(self, now: float) -> float:
        return now - self.started

    def source(self, entry_id: bytes) -> str:
        return f"p{self.partition}/{entry_id.decode()}"

    def add(self, raw: RawEntry) -> None:
        """Take one entry (stream order). Never raises for bad content: that becomes a letter."""
        index = len(self.entries)
        try:
            decoded, bad = decode_entry_parts(raw.fields)
        except EntryError as error:
            self._add_malformed(index, raw, f"malformed entry: {error}")
            return
        ts = decoded.ts if isinstance(decoded, Marker) else _entry_ts(raw.fields)
        if self.ts_bound is not None and ts > self.ts_bound:
            reason = (
                f"ts {ts} is above the producer's high-water mark {self.ts_bound}: "
                "not written by the producer (an entry added by hand?)"
            )
            self._add_malformed(index, raw, reason)
            return
        if isinstance(decoded, Marker):
            reconcile = decoded.op != PROGRESS
            self.entries.append(EntryState(raw.id, decoded.ts, 0, reconcile=reconcile))
            if reconcile:
                self.reconcile_ts.append(decoded.ts)
                # every change of the snapshot is before the marker: what follows it and
                # is below its ts is superseded (the module docstring)
                self.floor = max(self.floor or decoded.ts, decoded.ts)
            else:
                self.progress_ts = max(self.progress_ts or 0, decoded.ts)
                self.progress_id = raw.id  # entries come in stream order: the highest id
            return
        state = EntryState(raw.id, ts, _declared_changes(raw.fields, len(decoded) + len(bad)))
        self.entries.append(state)
        self.changes += state.changes
        for part in bad:
            self._letter(index, self._bad_part_letter(raw, ts, part))
        for change in decoded:
            self._add_change(index, change, raw)

    def _add_malformed(self, index: int, raw: RawEntry, reason: str) -> None:
        state = EntryState(raw.id, loose_ts(raw.fields), _loose_changes(raw.fields))
        self.entries.append(state)
        self.changes += state.changes
        self._letter(index, _malformed_letter(raw, reason, self.source(raw.id)))

    def _bad_part_letter(self, raw: RawEntry, ts: int, part: BadPart) -> DeadLetter:
        return DeadLetter(
            ts=ts,
            op=UPSERT,
            key=part.key,
            reason=f"malformed change: {part.reason}",
            source=self.source(raw.id),
            doc=part.value or None,
            deliveries=raw.attempts,
        )

    def _add_change(self, index: int, change: Change, raw: RawEntry) -> None:
        if self.floor is not None and change.ts < self.floor:
            # superseded by the snapshot at the floor: nothing to send, nothing to letter
            self.below_floor += 1
            self._count_superseded(change)
            return
        if raw.attempts >= self.max_deliveries:
            reason = (
                f"attempted {raw.attempts} times without an outcome "
                f"(MAX_DELIVERIES={self.max_deliveries})"
            )
            self._letter(index, self.letter_for(change, index, reason, raw.attempts))
            return
        problem = unsendable_reason(change)
        if problem is not None:
            self._letter(index, self.letter_for(change, index, problem, raw.attempts))
            return
        self.entries[index].open += 1
        older = self.pending.get(change.key)
        if older is not None:
            if older.change.ts > change.ts:
                # a replayed older change behind a newer one: settled as superseded
                self.entries[index].open -= 1
                self._count_superseded(change)
                return
            self.entries[older.entry].open -= 1
            self._count_superseded(older.change)
        self.pending[change.key] = Item(change, index, raw.attempts + 1)

    def _count_superseded(self, change: Change) -> None:
        if change.doc is None:
            self.superseded_deletes += 1
        else:
            self.superseded_upserts += 1

    def _letter(self, index: int, letter: DeadLetter) -> None:
        self.letters.append((index, letter))

    def letter_for(self, change: Change, index: int, reason: str, deliveries: int) -> DeadLetter:
        return DeadLetter(
            ts=change.ts,
            op=change.op,
            key=change.key,
            reason=reason,
            source=self.source(self.entries[index].id),
            doc=change.doc,
            deliveries=deliveries,
        )

    def items(self) -> list[Item]:
        """The changes still to send (one per key)."""
        return list(self.pending.values())

    def settle(self, item: Item) -> None:
        """``item`` has a final outcome (applied, or its letter is queued)."""
        if self.pending.get(item.change.key) is item:
            del self.pending[item.change.key]
        self.entries[item.entry].open -= 1

    def dead_letter(self, item: Item, reason: str) -> None:
        """Settle ``item`` as a dead letter carrying ``reason``."""
        self._letter(item.entry, self.letter_for(item.change, item.entry, reason, item.deliveries))
        self.settle(item)

    def take_letters(self) -> list[DeadLetter]:
        """Letters not yet written; each is handed out once."""
        letters = [letter for _, letter in self.letters]
        self.letters.clear()
        return letters

    def take_settled(self) -> list[EntryState]:
        """Entries all of whose changes are settled and that were not handed out before.

        Markers (progress, reconcile) are settled from the start, but a progress
        entry's frontier is only true once everything before it is settled, so the
        worker writes ``applied`` only when the whole batch is done (:meth:`done`)
        and nothing below ``progress_id`` is pending elsewhere either.
        """
        out: list[EntryState] = []
        for state in self.entries:
            if not state.acked and state.open == 0:
                state.acked = True
                out.append(state)
        return out

    def done(self) -> bool:
        return not self.pending and all(state.open == 0 for state in self.entries)


def floor_of(entries: Sequence[EntryState]) -> int | None:
    """The highest reconcile marker among ``entries`` (being acknowledged), or None: the
    partition's floor must be at least that before their XACK (consumer.acks)."""
    return max((state.ts for state in entries if state.reconcile), default=None)


def loose_ts(fields: dict[bytes, bytes]) -> int:
    """An entry's ts as well as it can be read (0 when it cannot)."""
    try:
        return int(fields.get(TS, b"0"))
    except ValueError:
        return 0


def _entry_ts(fields: dict[bytes, bytes]) -> int:
    return int(fields[TS])  # decode_entry_parts has read it already


def _declared_changes(fields: dict[bytes, bytes], found: int) -> int:
    """The changes the producer counted into written:p<N> for a data entry: ``n`` for a
    ``b`` entry (if readable), else what it holds; acked:p<N> must add the same."""
    if fields.get(OP) == BATCH:
        try:
            return max(int(fields.get(COUNT, b"")), 1)
        except ValueError:
            return max(found, 1)
    return found


def _loose_changes(fields: dict[bytes, bytes]) -> int:
    """How many changes the producer counted for a malformed entry, as well as can be told."""
    op = fields.get(OP)
    if op in (UPSERT, DELETE):
        return 1
    if op == BATCH:
        try:
            return max(int(fields.get(COUNT, b"1")), 1)
        except ValueError:
            return 1
    return 0


def _malformed_letter(raw: RawEntry, reason: str, source: str) -> DeadLetter:
    """A letter for an entry that cannot be split into changes: it keeps the whole entry
    (as a JSON object of its fields in ``doc``), so it can be rebuilt and retried."""
    return DeadLetter(
        ts=loose_ts(raw.fields),
        op=raw.fields.get(OP, b""),
        key=raw.fields.get(KEY, b""),
        reason=reason,
        source=source,
        doc=raw_fields_json(raw.fields),
        deliveries=raw.attempts,
    )
