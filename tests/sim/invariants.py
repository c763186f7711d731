"""The invariants, checked at the step that could break each one.

* nothing is acknowledged before OpenSearch accepted it: at every XACK, each
  change of the entry is in the index at its version or newer, or the entry has
  a dead letter, or the change is below a reconcile marker acknowledged before it
  in its partition (superseded by that snapshot, consumer.batch; the marker as the
  checker saw it acknowledged, not the consumer's stored floor);
* per key, the indexed version never goes backwards: at every index write;
* the applied frontier never passes an unacknowledged change: at every advance,
  every change of the partition with a ts below the frontier is in an acknowledged
  entry (a producer that resumed from its checkpoint writes changes again that may
  already be below a progress entry; the first copy's acknowledgement covers them);
  an entry written late, after a progress entry above its ts (a producer paused
  past its lease writes its batch after its successor's snapshot and progress,
  seed 5642, or a snapshot of its own, seed 2517), is covered by an acknowledged
  change of its key newer than it, or at or after the key's last change in
  Materialize before it (the index already searches what it restates); a change
  below a reconcile marker acknowledged in its partition is owed nothing (the
  snapshot supersedes it and consumers settle it unsent: seed 25039, a late delete of
  a key the snapshot no longer has);
* the checkpoint never passes a change that is in no stream (checked by
  tests.sim.producer.SimEntrySink at every checkpoint move), unless a reconcile
  marker at M >= the change's ts stands for it: Materialize compacted that history
  (it refused the producer's AS OF) and the snapshot at M is in the streams (each
  key live at M at M; a key gone by M is the reconcile's to delete);
* a reconcile deletes no document at or above the snapshot it follows
  (:meth:`Checker.on_reconcile`: the latest snapshot a producer read at or below the
  marker's ts), so nothing newer than the snapshot is lost, and no document live at
  its ts (whose snapshot row, indexed, would have kept it: a reconcile that ran before
  the snapshot's rows were indexed leaves live documents missing until they land);
* at quiescence (:meth:`Checker.at_rest`): the index equals the view, every entry
  is acknowledged, each frontier reached the last progress entry, and the
  dead-letter stream holds only the planted poison.

A broken invariant is recorded (the first one wins) and raised as
:class:`Violation`, a BaseException the runner's ``except Exception`` cannot
swallow, so the simulation stops at the step that broke it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from searchsync.common.entries import (
    RECONCILE,
    DeadLetter,
    EntryError,
    Marker,
    decode_entry_parts,
)
from searchsync.consumer.retention import parse_id

if TYPE_CHECKING:
    from .world import World

__all__ = ["Checker", "Violation"]


class Violation(BaseException):
    """An invariant broke; the message says which, where and why."""


class Checker:
    def __init__(self, world: World) -> None:
        self.world = world
        # highest version the index accepted per key (survives tombstone gc)
        self.accepted: dict[bytes, int] = {}
        # per stream: ids acknowledged, and the sources of dead letters
        self.acked: dict[str, set[bytes]] = {}
        self.lettered: set[str] = set()
        self.lettered_changes: set[tuple[bytes, int]] = set()  # (key, ts) of dead letters
        self.acked_changes: set[tuple[bytes, int]] = set()  # in an acknowledged entry
        self.acked_latest: dict[bytes, int] = {}  # the newest acknowledged ts of each key
        # per partition: the highest reconcile marker acknowledged so far
        self.acked_marker: dict[int, int] = {}
        # entries (stream, id) added after a progress entry above one of their changes,
        # and the highest progress entry written to each partition
        self.late: set[tuple[str, bytes]] = set()
        self.progress_top: dict[int, int] = {}
        self.letters: list[DeadLetter] = []
        self.poison_sources: set[str] = set()  # "p<N>/<id>" planted
        self.poison_keys: set[bytes] = set()
        # (key, ts) of every change ever added to a stream (trimming does not take it
        # back), and the last progress entry written to each partition
        self.in_streams: set[tuple[bytes, int]] = set()
        self.last_progress: dict[int, int] = {}
        # the ts of every snapshot a producer read to write it (SUBSCRIBE without AS OF),
        # and of every reconcile marker written, and of every reconcile run
        self.snapshots: list[int] = []
        self.markers: set[int] = set()
        self.reconciled: list[int] = []
        self.applied: dict[int, int] = {}  # each partition's applied frontier
        self.reconcile_deletes = 0  # documents the reconciles deleted
        # what the races the seeds in tests/sim/test_simulator.py stand for left behind:
        # unacknowledged changes below a frontier owed nothing as late entries covered by
        # a newer change of their key, or as changes below an acknowledged reconcile
        # marker; changes acknowledged unindexed below a marker; and commits fenced
        # with progress entries due
        self.covered_late = 0
        self.covered_by_marker = 0
        self.settled_below_marker = 0  # acknowledged below a marker, not in the index
        self.fenced_progress = 0
        self.fenced_reconciles = 0  # reconciles refused to a producer that lost its lease
        self.violation: str | None = None
        self.key: bytes | None = None  # the key the violation is about, if one
        # set at the first violation (the schedule stops waiting for its producer)
        self.broken = asyncio.Event()
        # off for the contract suite, which drives the models by hand
        self.enabled = True

    def fail(self, message: str) -> None:
        if not self.enabled:
            return
        if self.violation is None:
            self.violation = message
            self.broken.set()
            self.world.note(f"VIOLATION {message}")
        raise Violation(message)

    def on_letter(self, letter: DeadLetter) -> None:
        self.lettered.add(letter.source)
        self.lettered_changes.add((letter.key, letter.ts))
        self.letters.append(letter)

    def on_write(self, key: bytes, version: int, accepted: bool) -> None:
        """An index write of ``key`` at ``version`` was answered (accepted or 409)."""
        if not accepted:
            return
        before = self.accepted.get(key, 0)
        if version < before:
            self.key = key
            self.fail(
                f"indexed version of {key.decode()} went back from {before} to {version}"
                " (an older write accepted after a newer one)"
            )
        self.accepted[key] = version

    def on_ack(self, partition: int, ids: Iterable[bytes]) -> None:
        """At an XACK: each change of each entry is indexed at its version or newer, or
        dead-lettered, or superseded by a newer change of its key in an entry that is not
        acknowledged (consumer.batch never sends a change superseded inside its batch; the
        newer one is checked when its own entry is acknowledged)."""
        stream = self.world.keys.stream(partition)
        entries = self.world.redis.stream(stream).entries
        done = self.acked.setdefault(stream, set())
        ids = list(ids)
        done.update(ids)
        for entry_id in ids:
            fields = entries.get(parse_id(entry_id))
            if fields is None:
                continue
            reconcile = _reconcile_ts(fields)
            if reconcile is not None:
                floor = max(self.acked_marker.get(partition, 0), reconcile)
                self.acked_marker[partition] = floor
            changes = _changes(fields)
            self.acked_changes.update(changes)  # a dead-lettered entry's too: it is settled
            for key, ts in changes:
                if ts > self.acked_latest.get(key, -1):
                    self.acked_latest[key] = ts
            if f"p{partition}/{entry_id.decode()}" in self.lettered:
                continue
            for key, ts in changes:
                if (key, ts) in self.lettered_changes:
                    continue  # a copy of it (written again by the producer) was dead-lettered
                if ts < self.acked_marker.get(partition, 0):
                    # superseded by the snapshot of a marker acknowledged before it; one
                    # not in the index either was settled unsent (the snapshot floor)
                    self.settled_below_marker += self.accepted.get(key, 0) < ts
                    continue
                if self.accepted.get(key, 0) < ts and not self._superseded(stream, key, ts):
                    self.key = key
                    self.fail(
                        f"p{partition} entry {entry_id.decode()} acknowledged but change "
                        f"{key.decode()}@{ts} is not in the index "
                        f"(index has version {self.accepted.get(key)}) and no newer change "
                        "of the key is waiting"
                    )

    def _superseded(self, stream: str, key: bytes, ts: int) -> bool:
        # a newer change of the key was dead-lettered (a poll wrote a poison row again):
        # consumer.batch dropped this one as superseded inside the batch
        if any(k == key and t > ts for k, t in self.lettered_changes):
            return True
        done = self.acked.get(stream, set())
        for entry_id, fields in self.world.redis.xrange(stream):
            if entry_id in done:
                continue
            if any(k == key and t >= ts for k, t in _changes(fields)):
                return True
        return False

    def on_reconcile(self, ts: int, deleted: Iterable[tuple[bytes, int]]) -> None:
        """A reconcile at marker ``ts`` deleted these (key, version): all older than the
        snapshot the marker follows."""
        self.reconciled.append(ts)
        deleted = list(deleted)
        self.reconcile_deletes += len(deleted)
        taken = [s for s in self.snapshots if s <= ts]
        if not taken:
            self.fail(f"reconcile at {ts}, and no snapshot was read at or before it")
            return  # the contract suite runs with the checks off
        snapshot = max(taken)
        live = self.world.mz.state_at(ts) if self.world.mz is not None else {}
        for key, version in deleted:
            if version >= snapshot:
                self.key = key
                self.fail(
                    f"reconcile at {ts} deleted {key.decode()}@{version}, not older than "
                    f"the snapshot at {snapshot}"
                )
            if key.decode() in live and key not in self.poison_keys:
                # its row at ts (written before the marker) would have kept it: the
                # reconcile ran before the snapshot's rows were indexed, and the document
                # is missing from search until its row lands
                self.key = key
                self.fail(
                    f"reconcile at {ts} deleted {key.decode()}@{version}, live at {ts}, "
                    "before the snapshot's row of it was indexed"
                )

    def on_advance(self, partition: int, frontier: int) -> None:
        self.applied[partition] = frontier  # what the model's Redis holds now
        stream = self.world.keys.stream(partition)
        done = self.acked.get(stream, set())
        for entry_id, fields in self.world.redis.xrange(stream):
            if entry_id in done:
                continue
            for key, ts in _changes(fields):
                if ts >= frontier or (key, ts) in self.acked_changes:
                    continue
                if ts < self.acked_marker.get(partition, 0):
                    self.covered_by_marker += 1
                elif (stream, entry_id) in self.late and self._indexed_as_of(key, ts):
                    self.covered_late += 1
                else:
                    self.key = key
                    self.fail(
                        f"p{partition} applied frontier moved to {frontier} past entry "
                        f"{entry_id.decode()} (change {key.decode()}@{ts}), not acknowledged"
                    )

    def _indexed_as_of(self, key: bytes, ts: int) -> bool:
        """Whether an acknowledged change of ``key`` already holds its state as of ``ts``:
        one newer than ``ts``, or one at or after the key's last change in Materialize at
        or before ``ts``. A late entry restating that state (a producer paused past its
        lease writes a snapshot after its successor's progress entries: seed 2517) then
        changes only the version when it lands, never what is searched."""
        acked = self.acked_latest.get(key, -1)
        if acked > ts:
            return True
        mz = self.world.mz
        if mz is None or acked < 0:
            return False
        name = key.decode()
        return not any(acked < t <= ts and name in changes for t, changes in mz.log)

    def at_rest(self, view: Mapping[bytes, bytes], last_progress: Mapping[int, int]) -> None:
        """The checks at quiescence."""
        world = self.world
        live = {k: v for k, v in world.index.live().items() if k not in self.poison_keys}
        wanted = {k: v for k, v in view.items() if k not in self.poison_keys}
        if live != wanted:
            missing = sorted(k.decode() for k in wanted.keys() - live.keys())
            extra = sorted(k.decode() for k in live.keys() - wanted.keys())
            stale = sorted(k.decode() for k in wanted.keys() & live.keys() if wanted[k] != live[k])
            self.fail(f"index differs from the view: missing {missing} extra {extra} stale {stale}")
        for partition in range(world.partitions):
            stream = world.redis.stream(world.keys.stream(partition))
            if stream.group.pending:
                self.fail(f"p{partition}: {len(stream.group.pending)} entries still pending")
            if stream.order and stream.group.last_delivered < stream.order[-1]:
                self.fail(f"p{partition}: entries never delivered")
            want = last_progress.get(partition)
            got = world.redis.get(world.keys.applied(partition))
            if want is not None and (got is None or int(got) != want):
                self.fail(f"p{partition}: applied frontier {got!r}, last progress {want}")
        for letter in self.letters:
            if letter.source not in self.poison_sources and letter.key not in self.poison_keys:
                self.fail(f"dead-lettered {letter.key!r} from {letter.source}: {letter.reason}")


def _reconcile_ts(fields: Mapping[bytes, bytes]) -> int | None:
    """The ts of a reconcile marker; None for any other entry."""
    try:
        decoded, _ = decode_entry_parts(fields)
    except EntryError:
        return None
    if isinstance(decoded, Marker) and decoded.op == RECONCILE:
        return decoded.ts
    return None


def _changes(fields: Mapping[bytes, bytes]) -> list[tuple[bytes, int]]:
    try:
        decoded, _ = decode_entry_parts(fields)
    except EntryError:
        return []
    if isinstance(decoded, Marker):
        return []
    return [(change.key, change.ts) for change in decoded]
