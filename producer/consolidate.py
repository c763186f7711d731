"""Consolidation of SUBSCRIBE events into settled per-key changes, following the view.

Pure, no I/O. Materialize gives the rows of one timestamp in no particular order
and ``mz_diff`` is a multiplicity, so nothing can be decided about a key until
its timestamp is complete: when a progress row above it, or a row at a later
timestamp, arrives (timestamps never go down). Then each key's net diffs are
applied to what the view held for it before, and the outcome follows the view:

* one live row afterwards → upsert that row (an insert, an update, or — after a
  key violation — the survivor);
* no live row afterwards → delete;
* two or more live rows → a key violation: the key's known rows are reported,
  nothing is written for it (the index keeps what it had, usually the row that
  was live before the second one arrived), and the stream goes on; when all but
  one are retracted again, the survivor is written (nothing, if the survivor is
  the row the index already holds).

That needs per-key state across timestamps (a second row arriving at a later
timestamp, or the retraction of one of two, says nothing on its own), kept in
bounded memory:

* ``_live``: every key with a live row, as a 64-bit fingerprint in a compact set
  (producer.keyset.KeySet: ~17 bytes a key at 1M keys in C, ~69 in its Python
  fallback; measured by ``python -m bench.keyset``). The row itself is not kept:
  it is in the index;
* ``_violated``: the rows of keys that have more than one live row right now —
  the rows that arrived while the key was in violation, and how many live rows
  are only known to exist (the one indexed before). Violations are rare (a view
  that breaks its own key), so this stays small.

The state is only as good as its start: every subscription starts with a
snapshot (SNAPSHOT = true, producer.resume), which fills it; a resumed one (AS OF
the checkpoint) reads the snapshot for its state only and writes none of it
(``write_snapshot=False``). Two keys whose fingerprints collide (odds ~n²/2⁶⁵,
~3e-8 at 1M keys) are one key to the state: an insert of the second would be
taken for a violation. ENVELOPE UPSERT needs none of this: Materialize keeps the
state and reports violations itself.

The frontier F is the smallest timestamp that may still get rows; everything
below it has been handed out. It moves on a progress row (to that row's ts) and on
a row at a later timestamp (to that ts).

Memory for the rows in hand is bounded by the keys of the timestamp in hand,
except that the snapshot (every row at the AS OF timestamp, all with positive
multiplicities) may be the whole view: once ``hold_limit`` snapshot keys are held,
they are handed out early (the timestamp still counts as incomplete, so the
checkpoint does not move) and only their fingerprint is remembered. A later
snapshot row for such a key is then a violation whose first row is only known to
exist (it went out as an upsert).

:meth:`Consolidator.feed_rows` takes SUBSCRIBE rows instead of events: the rows
of a snapshot that insert a key not seen yet — nearly every row of a backlog — go
straight from the row into the held snapshot, with no event built; every other row
takes the general path, in stream order. Handed-out snapshot rows come out as a
mapping (``Consolidated.snapshot``), not one change tuple each. When the rows are a
:class:`~producer.results.ResultRows` (the C path, producer/subscribe.py) the held
rows are RawRows, rows still in libpq's result, none loaded into Python values:
the document writer reads their text; a RawRow reads like the tuple of its values
(and is turned into that tuple when a second row of its key arrives).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import native
from .keyset import KeySetLike, new_key_set
from .results import ResultRows
from .rows import (
    DELETE_STATE,
    FIRST_VALUE,
    KEY_VIOLATION_STATE,
    Envelope,
    Event,
    Layout,
    Rejected,
    Row,
    key_problem,
    parse_rows,
)

__all__ = ["DEFAULT_HOLD_LIMIT", "Consolidated", "Consolidator", "Violation", "violation_reason"]

# Snapshot keys held before they are handed out early: about one FETCH (~1.5 KB of
# loaded row each, ~8 MB). Holding more buys exact violation reports for more of a
# big snapshot at ~1.5 KB per key; the producer's memory goal (100 MB) decides.
DEFAULT_HOLD_LIMIT = 5_000
# keys of at most this many characters are surely short enough (producer.rows)
_SURELY_SHORT_KEY = 128

Values = tuple[object, ...]


def violation_reason(live_rows: int, ts: int) -> str:
    """The reason of a key violation: ``live_rows`` live rows for one key at ``ts`` (the
    dead letter's, producer.letters, and the polling path's)."""
    return f"key violation: {live_rows} live rows for one key at ts {ts}"


class Violation(NamedTuple):
    """``key`` has ``len(rows) + unknown`` live rows at ``ts`` (rows repeated by
    multiplicity); ``unknown`` of them are only known to exist (their document is the
    one in the index)."""

    ts: int
    key: str
    rows: tuple[Values, ...]
    reason: str
    unknown: int = 0


class _Violated:
    """A key with more than one live row: ``known`` rows ([values, multiplicity]) and
    ``unknown`` more that were live before the violation began."""

    __slots__ = ("known", "unknown")

    def __init__(self, unknown: int, known: list[list[Any]]) -> None:
        self.unknown = unknown
        self.known = known


@dataclass(slots=True)
class Consolidated:
    """What one :meth:`Consolidator.feed` decided, in timestamp order.

    ``snapshot`` holds the snapshot rows handed out (key → values, a tuple or a
    ``RawRow`` that reads like one, see producer.results; all upserts at
    ``snapshot_ts``, the AS OF); they come first: no change is below the AS OF.
    ``changes`` are ``(ts, key, values)``, values None for a delete. ``frontier``
    is the new frontier when it moved (never before the snapshot is complete),
    else None. ``as_of`` is set by the first progress row of the subscription
    (Materialize guarantees it is the AS OF).
    """

    snapshot: dict[str, Row] = field(default_factory=dict)
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
        return [(ts, key, tuple(values)) for key, values in self.snapshot.items()] + self.changes


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
        "_live",
        "_pending",
        "_reported",
        "_seen",
        "_snap",
        "_snapshot",
        "_snapshot_done",
        "_states",
        "_upsert",
        "_violated",
        "_write_snapshot",
    )

    def __init__(
        self,
        *,
        snapshot: bool,
        envelope: Envelope = "diffs",
        hold_limit: int = DEFAULT_HOLD_LIMIT,
        write_snapshot: bool = True,
    ) -> None:
        """``write_snapshot`` False: the snapshot only fills the per-key state (a resume
        from the checkpoint, or DISCARD_SNAPSHOT); none of it is handed out."""
        if hold_limit < 1:
            raise ValueError("hold_limit must be at least 1")
        self._snapshot = snapshot
        self._write_snapshot = write_snapshot
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
        # (a tuple, or a RawRow of producer.results: a row still in libpq's result)
        self._snap: dict[str, Row] = {}
        # upsert envelope: key -> (state, values)
        self._states: dict[str, tuple[object, Values | None]] = {}
        # Every key of the snapshot so far, held, pending or handed out early: the fast
        # path holds a row only for a key not in it (compact; emptied after the snapshot)
        self._seen: KeySetLike = new_key_set()
        # keys with a live row, and the rows of keys in violation (module docstring)
        self._live: KeySetLike = new_key_set()
        self._violated: dict[str, _Violated] = {}
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

    @property
    def live_keys(self) -> int:
        """Keys with a live row (those in violation included)."""
        return len(self._live)

    @property
    def violated_keys(self) -> int:
        """Keys with more than one live row right now."""
        return len(self._violated)

    def state_bytes(self) -> int:
        """Bytes of the per-key state's fingerprint sets (not the rows of violations)."""
        return self._live.nbytes + self._seen.nbytes

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
        if (
            speedups is not None
            and type(rows) is ResultRows
            and type(seen) is speedups.KeySet
            and type(raw) is str
        ):
            # rows still in libpq's result (producer.results): held as RawRows, no tuple
            # built; where it stops, the general path loads that row with psycopg
            raw_text = raw.encode()
            while True:
                stop = speedups.hold_snapshot_result(
                    rows.raw, position, raw_text, key_index, snap, seen, room
                )
                if stop > position and len(snap) >= room:  # the row before stop filled it
                    self._hand_out_snapshot(out)
                    room = self._hold_limit
                    position = stop
                    continue
                out.snapshot_rows += stop - start
                return stop
        # (a KeySet made while the C path was off is the Python one: the loop below)
        while speedups is not None and type(rows) is list and type(seen) is speedups.KeySet:
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
            if type(key) is not str or key in seen:  # seen: held, pending or handed out
                break
            if (not key or len(key) > _SURELY_SHORT_KEY) and key_problem(key) is not None:
                break  # parse_rows dead-letters it on its own
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
                if not upsert:
                    # Snapshot rows are nearly all "+1, a key not seen yet": keep just the
                    # row; a second row for the key moves it to the general structure, and
                    # a row of a key handed out already is settled against its state.
                    seen = self._seen
                    first = snap.pop(key, None)
                    if first is not None:  # a tuple from here on (it may be a RawRow)
                        pending[key] = [[tuple(first), 1]]
                    elif tag == 1 and key not in seen:
                        seen.add(key)
                        snap[key] = values  # type: ignore[assignment]  # diffs: never None
                        if len(snap) + len(pending) >= hold_limit:
                            self._hand_out_snapshot(out)
                        continue
                    seen.add(key)
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
        self._seen.clear()

    def _hand_out_snapshot(self, out: Consolidated) -> None:
        ts = self._in_hand
        assert ts is not None
        self._settle(ts, out)  # their keys stay in _seen: later rows for them are late

    def _settle(self, ts: int, out: Consolidated) -> None:
        # the snapshot of a resumed subscription only fills the state
        silent = self._snapshot and ts == self._as_of and not self._write_snapshot
        changes: list[tuple[int, str, Values | None]] = [] if silent else out.changes
        violations: list[Violation] = [] if silent else out.violations
        live = self._live
        if self._snap:  # snapshot rows: only ever at the AS OF, each a key not live yet
            live.update(self._snap)
            if not silent:
                out.snapshot.update(self._snap)
                out.snapshot_ts = ts
            self._snap.clear()
        violated = self._violated
        # The common cases inline (an insert, a delete, an update of a key with one live
        # row); everything else against the key's state (_settle_key).
        for key, entries in self._pending.items():
            if key not in violated:
                if len(entries) == 1:
                    values, diff = entries[0]
                    if diff == 1 and live.add(key):
                        changes.append((ts, key, values))
                        continue
                    if diff == -1 and live.discard(key):
                        changes.append((ts, key, None))
                        continue
                elif len(entries) == 2 and key in live:
                    (first, first_diff), (second, second_diff) = entries
                    if first_diff + second_diff == 0 and first_diff in (1, -1):
                        changes.append((ts, key, first if first_diff == 1 else second))
                        continue
            self._settle_key(ts, key, entries, changes, violations)
        self._pending.clear()
        for key, (state, values) in self._states.items():
            if state == KEY_VIOLATION_STATE:
                reason = f"key violation reported by ENVELOPE UPSERT at ts {ts}"
                violations.append(Violation(ts, key, (), reason))
            elif state == DELETE_STATE:
                changes.append((ts, key, None))
            else:
                changes.append((ts, key, values))
        self._states.clear()

    def _settle_key(
        self,
        ts: int,
        key: str,
        entries: list[list[Any]],
        changes: list[tuple[int, str, Values | None]],
        violations: list[Violation],
    ) -> None:
        """Apply ``key``'s net diffs at ``ts`` to its state; the outcome follows the view
        (module docstring)."""
        live = self._live
        state = self._violated.pop(key, None)
        if state is None:
            unknown, known = (1 if key in live else 0), []
        else:
            unknown, known = state.unknown, state.known
        before = unknown + sum(count for _, count in known)
        retracted = False
        for values, diff in entries:
            if diff > 0:
                _add_row(known, values, diff)
            elif diff < 0:
                retracted = True
                # what is not among the known rows was the row live before (in the index)
                unknown = max(unknown - _remove_row(known, values, -diff), 0)
        after = unknown + sum(count for _, count in known)
        if after == 0:
            live.discard(key)
            if before or retracted:
                changes.append((ts, key, None))
            return
        live.add(key)
        if after == 1:
            if not unknown:  # else the one live row is the document the index holds
                changes.append((ts, key, known[0][0]))
            return
        self._violated[key] = _Violated(unknown, known)
        rows = tuple(values for values, count in known for _ in range(count))
        reason = violation_reason(after, ts)
        if unknown:
            reason += (
                f" ({unknown} of them live before the violation: its document is the one in "
                "the index, left as it was)"
            )
        violations.append(Violation(ts, key, rows, reason, unknown))


def _add_row(known: list[list[Any]], values: Values, count: int) -> None:
    for entry in known:
        if entry[0] == values:
            entry[1] += count
            return
    known.append([values, count])


def _remove_row(known: list[list[Any]], values: Values, count: int) -> int:
    """Take ``count`` copies of ``values`` out of ``known``; return how many were not there."""
    for position, entry in enumerate(known):
        if entry[0] == values:
            taken = min(entry[1], count)
            entry[1] -= taken
            if entry[1] == 0:
                del known[position]
            return count - int(taken)
    return count
