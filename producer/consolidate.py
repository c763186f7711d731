"""Per-timestamp, per-key consolidation of SUBSCRIBE events, and timestamp completeness.

Pure, no I/O. Materialize gives the rows of one timestamp in no particular order
and ``mz_diff`` is a multiplicity, so nothing can be decided about a key until
its timestamp is complete: when a progress row above it, or a row at a later
timestamp, arrives (timestamps never go down). Then, per key:

* exactly one live row (the positive multiplicities sum to 1) → upsert that row;
* no live row but a retraction → delete;
* a row retracted and inserted again (multiplicities cancel) → nothing;
* more than one live row → a key violation: the key and all its live rows are
  reported, nothing is written for it, and the stream goes on.

The frontier F is the smallest timestamp that may still get rows; everything
below it has been handed out. It moves on a progress row (to that row's ts) and on
a row at a later timestamp (to that ts).

Memory is bounded by the keys of the timestamp in hand, except that the snapshot
(every row at the AS OF timestamp, all with positive multiplicities) may be the
whole view: once ``hold_limit`` snapshot keys are held, they are handed out early
(the timestamp still counts as incomplete, so the checkpoint does not move), and
only their key is remembered. A later snapshot row for such a key is still
reported as a violation, but with only the rows not yet handed out.

:meth:`Consolidator.feed_rows` takes SUBSCRIBE rows instead of events: the rows
of a snapshot that insert a key not seen yet — nearly every row of a backlog — go
straight from the row into the held snapshot, with no event built; every other row
takes the general path, in stream order. Handed-out snapshot rows come out as a
mapping (``Consolidated.snapshot``), not one change tuple each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from producer import native
from producer.rows import (
    DELETE_STATE,
    FIRST_VALUE,
    KEY_VIOLATION_STATE,
    Envelope,
    Event,
    Layout,
    Rejected,
    parse_rows,
)

__all__ = ["DEFAULT_HOLD_LIMIT", "Consolidated", "Consolidator", "Violation"]

# Snapshot keys held before they are handed out early: about one FETCH (~1.5 KB of
# loaded row each, ~8 MB). Holding more buys exact violation reports for more of a
# big snapshot at ~1.5 KB per key; the producer's memory goal (100 MB) decides.
DEFAULT_HOLD_LIMIT = 5_000

Values = tuple[object, ...]


class Violation(NamedTuple):
    """``key`` has ``len(rows)`` live rows at ``ts`` (rows repeated by multiplicity)."""

    ts: int
    key: str
    rows: tuple[Values, ...]
    reason: str


@dataclass(slots=True)
class Consolidated:
    """What one :meth:`Consolidator.feed` decided, in timestamp order.

    ``snapshot`` holds the snapshot rows handed out (key → values, all upserts at
    ``snapshot_ts``, the AS OF); they come first: no change is below the AS OF.
    ``changes`` are ``(ts, key, values)``, values None for a delete. ``frontier``
    is the new frontier when it moved (never before the snapshot is complete),
    else None. ``as_of`` is set by the first progress row of the subscription
    (Materialize guarantees it is the AS OF).
    """

    snapshot: dict[str, Values] = field(default_factory=dict)
    snapshot_ts: int | None = None
    changes: list[tuple[int, str, Values | None]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    frontier: int | None = None
    as_of: int | None = None
    snapshot_rows: int = 0
    snapshot_complete: bool = False

    def all_changes(self) -> list[tuple[int, str, Values | None]]:
        """``snapshot`` as changes, then ``changes``: every change in timestamp order."""
        ts = self.snapshot_ts
        if ts is None:
            return list(self.changes)
        return [(ts, key, values) for key, values in self.snapshot.items()] + self.changes


class Consolidator:
    """Turns a subscription's events into settled per-key changes.

    ``snapshot`` says whether the subscription was declared with SNAPSHOT = true:
    then the rows at the AS OF timestamp are the snapshot. ``envelope`` says what
    the events are: ``(ts, key, diff, values)`` or ``(ts, key, state, values)``.
    """

    __slots__ = (
        "_as_of",
        "_frontier",
        "_hold_limit",
        "_in_hand",
        "_in_hand_raw",
        "_pending",
        "_reported",
        "_seen",
        "_snap",
        "_snapshot",
        "_snapshot_done",
        "_states",
        "_upsert",
    )

    def __init__(
        self,
        *,
        snapshot: bool,
        envelope: Envelope = "diffs",
        hold_limit: int = DEFAULT_HOLD_LIMIT,
    ) -> None:
        if hold_limit < 1:
            raise ValueError("hold_limit must be at least 1")
        self._snapshot = snapshot
        self._upsert = envelope == "upsert"
        self._hold_limit = hold_limit
        self._as_of: int | None = None
        self._frontier: int | None = None
        self._reported: int | None = None  # the frontier last given out in Consolidated
        self._in_hand: int | None = None  # the timestamp whose rows are being collected
        # mz_timestamp of a row at _in_hand as loaded (text): feed_rows compares rows to it
        self._in_hand_raw: object = None
        # diffs envelope: key -> [[values, multiplicity], ...] (a handful per key)
        self._pending: dict[str, list[list[Any]]] = {}
        # diffs envelope, snapshot rows with multiplicity 1 and a key seen once: key -> row
        self._snap: dict[str, Values] = {}
        # upsert envelope: key -> (state, values)
        self._states: dict[str, tuple[object, Values | None]] = {}
        # Every key of the snapshot so far, held or handed out early: a key in it and
        # not held any more was handed out (one set probe per snapshot row; a separate
        # set of handed-out keys cost another pass over every hand-out).
        self._seen: set[str] = set()
        self._snapshot_done = not snapshot

    @property
    def frontier(self) -> int | None:
        """Every change below this timestamp has been handed out (None: not known yet).

        Stays None until the snapshot (if any) is complete: before that, the
        changes below the AS OF are the snapshot, which is not all handed out.
        """
        return self._frontier if self._snapshot_done else None

    @property
    def as_of(self) -> int | None:
        return self._as_of

    @property
    def snapshot_done(self) -> bool:
        return self._snapshot_done

    def feed(self, events: Iterable[Event]) -> Consolidated:
        """Consume ``events`` (in stream order); return what they settled.

        Raises ValueError if timestamps go back (Materialize never does that).
        """
        out = Consolidated()
        self._feed_into(events, out)
        return self._close(out)

    def feed_rows(
        self, layout: Layout, rows: Sequence[Values], rejected: list[Rejected]
    ) -> Consolidated:
        """:meth:`feed` of ``parse_rows(layout, rows, rejected)``, faster for a snapshot.

        The hot path of a backlog: while the snapshot's timestamp is in hand, a row
        that inserts one copy of a key not seen yet is held as it is (its values
        sliced off), without parsing it into an event; the first row that is
        anything else (progress, a repeated key, a later timestamp, a malformed
        row) goes through :func:`~producer.rows.parse_rows` and the general loop,
        and the fast path resumes after it. Outside a snapshot, and for ENVELOPE
        UPSERT, it is just that general path. Raises as :meth:`feed`.
        """
        out = Consolidated()
        count = len(rows)
        position = 0
        while position < count:
            if self._upsert or self._snapshot_done or layout.envelope != "diffs":
                self._feed_into(parse_rows(layout, rows[position:], rejected), out)
                break
            if self._in_hand_raw is not None:
                position = self._take_snapshot_rows(layout.key_index, rows, position, out)
                if position == count:
                    break
            row = rows[position]
            events = parse_rows(layout, (row,), rejected)
            self._feed_into(events, out)
            if (
                events
                and len(events[0]) == 4
                and events[0][0] == self._in_hand == self._as_of
                and type(row[0]) is str  # equal text, equal timestamp (not so for 5 and 5.0)
            ):
                self._in_hand_raw = row[0]  # a snapshot row: the ones like it are fast
            position += 1
        return self._close(out)

    # One loop over the rows of a FETCH, state in locals: it runs once per snapshot row.
    # Written by hand in C too (hold_snapshot_rows in producer/_speedups.c, the same
    # loop; see producer.documents "C path"): ~0.8 → ~0.55 µs per row measured alone
    # on 20,000 FreshMart rows, 1.9 → 0.9 µs per row under cProfile in
    # bench/producer.py, where the rows are fresh from psycopg.
    def _take_snapshot_rows(
        self, key_index: int, rows: Sequence[Values], start: int, out: Consolidated
    ) -> int:
        """Hold ``rows[start:]`` while they are first +1 rows of keys at the snapshot's
        timestamp; return the index of the first row that is not."""
        raw = self._in_hand_raw
        snap = self._snap
        seen = self._seen
        room = self._hold_limit - len(self._pending)  # the loop adds nothing to _pending
        position = start
        speedups = native.speedups
        while speedups is not None and type(rows) is list:
            stop = speedups.hold_snapshot_rows(
                rows, position, raw, key_index, FIRST_VALUE, snap, seen, room
            )
            if stop < 0:  # row -stop - 1 is no tuple (or too short): the loop below goes on
                position = -stop - 1
                break
            if stop > position and len(snap) >= room:  # the row before stop filled it
                self._hand_out_snapshot(out)
                room = self._hold_limit  # settling emptied _pending
                position = stop
                continue
            out.snapshot_rows += stop - start
            return stop
        resume = position
        for position in range(resume, len(rows)):
            row = rows[position]
            if row[0] != raw or row[1] is not False or row[2] != 1:
                break
            key = row[key_index]
            if type(key) is not str or key in seen:  # seen: held, or handed out already
                break
            seen.add(key)
            snap[key] = row[FIRST_VALUE:]
            if len(snap) >= room:
                self._hand_out_snapshot(out)
                room = self._hold_limit  # settling emptied _pending
        else:
            position = len(rows)
        out.snapshot_rows += position - start
        return position

    def _close(self, out: Consolidated) -> Consolidated:
        frontier = self.frontier
        if frontier is not None and frontier != self._reported:
            out.frontier = self._reported = frontier
        return out

    # One loop over every event of a FETCH: kept inline (no per-event helper calls,
    # state in locals) because it runs once per row at 100k rows/s.
    def _feed_into(self, events: Iterable[Event], out: Consolidated) -> None:  # noqa: PLR0915
        pending = self._pending
        snap = self._snap
        states = self._states
        snapshot_rows = 0
        upsert = self._upsert
        hold_limit = self._hold_limit
        in_hand = self._in_hand
        snapshot_open = not self._snapshot_done  # rows now are snapshot rows
        for event in events:
            if len(event) == 1:  # Progress: nothing below event.ts will come
                ts = event[0]
                if self._as_of is None:
                    self._as_of = out.as_of = ts
                if in_hand is not None and ts > in_hand:
                    self._complete(out)
                    in_hand = None
                if self._frontier is None or ts > self._frontier:
                    self._frontier = ts
                if not self._snapshot_done and ts > self._as_of:
                    self._finish_snapshot(out)  # an empty snapshot ends here
                snapshot_open = not self._snapshot_done
                continue
            ts, key, tag, values = event
            if ts != in_hand:
                if in_hand is not None:
                    if ts < in_hand:
                        raise ValueError(f"timestamp went back from {in_hand} to {ts}")
                    self._complete(out)
                elif self._as_of is None:
                    self._as_of = out.as_of = ts  # no opening progress row: the first ts
                self._in_hand = in_hand = ts
                self._in_hand_raw = None
                if self._frontier is None or ts > self._frontier:
                    self._frontier = ts
                if not self._snapshot_done and ts != self._as_of:
                    self._finish_snapshot(out)
                snapshot_open = not self._snapshot_done
            if snapshot_open:
                snapshot_rows += 1
                seen = self._seen
                if key in seen and key not in snap and key not in pending and key not in states:
                    # seen but not held: it was handed out already
                    out.violations.append(_late_snapshot_row(ts, key, tag, values))
                    continue
                seen.add(key)
                if not upsert:
                    # Snapshot rows are nearly all "+1, a key not seen yet": keep just the
                    # row; a second row for the key moves it to the general structure.
                    first = snap.pop(key, None)
                    if first is not None:
                        pending[key] = [[first, 1]]
                    elif tag == 1 and key not in pending:
                        snap[key] = values  # type: ignore[assignment]  # diffs: never None
                        if len(snap) + len(pending) >= hold_limit:
                            self._hand_out_snapshot(out)
                        continue
            if upsert:
                previous = states.get(key)
                if previous is not None and previous[0] == KEY_VIOLATION_STATE:
                    continue  # a violation within the timestamp sticks
                states[key] = (tag, values)
                if snapshot_open and len(states) >= hold_limit:
                    self._hand_out_snapshot(out)
                continue
            entries = pending.get(key)
            if entries is None:
                pending[key] = [[values, tag]]
                if snapshot_open and len(pending) >= hold_limit:
                    self._hand_out_snapshot(out)
                continue
            for entry in entries:
                if entry[0] == values:
                    entry[1] += tag
                    break
            else:
                entries.append([values, tag])
        out.snapshot_rows += snapshot_rows

    def _complete(self, out: Consolidated) -> None:
        """The timestamp in hand is complete: settle every key it touched."""
        ts = self._in_hand
        assert ts is not None
        self._settle(ts, out)
        self._in_hand = None
        self._in_hand_raw = None
        if not self._snapshot_done:
            self._finish_snapshot(out)

    def _finish_snapshot(self, out: Consolidated) -> None:
        self._snapshot_done = True
        out.snapshot_complete = True
        self._seen = set()

    def _hand_out_snapshot(self, out: Consolidated) -> None:
        ts = self._in_hand
        assert ts is not None
        self._settle(ts, out)  # their keys stay in _seen: later rows for them are late

    def _settle(self, ts: int, out: Consolidated) -> None:
        changes = out.changes
        if self._snap:  # snapshot rows: only ever at the AS OF
            out.snapshot.update(self._snap)
            out.snapshot_ts = ts
            self._snap.clear()
        for key, entries in self._pending.items():
            if len(entries) == 1:  # the common cases: an insert, a delete
                values, diff = entries[0]
                if diff == 1:
                    changes.append((ts, key, values))
                    continue
                if diff < 0:
                    changes.append((ts, key, None))
                    continue
            live: list[Values] = []
            retracted = False
            for values, diff in entries:
                if diff > 0:
                    live.extend([values] * diff)
                elif diff < 0:
                    retracted = True
            if len(live) == 1:
                changes.append((ts, key, live[0]))
            elif live:
                reason = f"key violation: {len(live)} live rows for one key at ts {ts}"
                out.violations.append(Violation(ts, key, tuple(live), reason))
            elif retracted:
                changes.append((ts, key, None))
        self._pending.clear()
        for key, (state, values) in self._states.items():
            if state == KEY_VIOLATION_STATE:
                reason = f"key violation reported by ENVELOPE UPSERT at ts {ts}"
                out.violations.append(Violation(ts, key, (), reason))
            elif state == DELETE_STATE:
                changes.append((ts, key, None))
            else:
                changes.append((ts, key, values))
        self._states.clear()


def _late_snapshot_row(ts: int, key: str, tag: object, values: Values | None) -> Violation:
    if values is None:
        rows: tuple[Values, ...] = ()
    else:
        copies = tag if isinstance(tag, int) else 1
        rows = (values,) * max(copies, 1)
    reason = (
        f"key violation: another snapshot row for a key already written at ts {ts}"
        " (the first row went out as an upsert before this one arrived)"
    )
    return Violation(ts, key, rows, reason)
