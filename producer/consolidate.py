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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from producer.rows import DELETE_STATE, KEY_VIOLATION_STATE, Envelope, Event

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

    ``changes`` are ``(ts, key, values)``, values None for a delete. ``frontier``
    is the new frontier when it moved (never before the snapshot is complete),
    else None. ``as_of`` is set by the first progress row of the subscription
    (Materialize guarantees it is the AS OF).
    """

    changes: list[tuple[int, str, Values | None]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    frontier: int | None = None
    as_of: int | None = None
    snapshot_rows: int = 0
    snapshot_complete: bool = False


class Consolidator:
    """Turns a subscription's events into settled per-key changes.

    ``snapshot`` says whether the subscription was declared with SNAPSHOT = true:
    then the rows at the AS OF timestamp are the snapshot. ``envelope`` says what
    the events are: ``(ts, key, diff, values)`` or ``(ts, key, state, values)``.
    """

    __slots__ = (
        "_as_of",
        "_flushed",
        "_frontier",
        "_hold_limit",
        "_in_hand",
        "_pending",
        "_reported",
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
        # diffs envelope: key -> [[values, multiplicity], ...] (a handful per key)
        self._pending: dict[str, list[list[Any]]] = {}
        # diffs envelope, snapshot rows with multiplicity 1 and a key seen once: key -> row
        self._snap: dict[str, Values] = {}
        # upsert envelope: key -> (state, values)
        self._states: dict[str, tuple[object, Values | None]] = {}
        self._flushed: set[str] = set()  # snapshot keys already handed out early
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

    # One loop over every event of a FETCH: kept inline (no per-event helper calls,
    # state in locals) because it runs once per row at 100k rows/s.
    def feed(self, events: Iterable[Event]) -> Consolidated:  # noqa: PLR0915
        """Consume ``events`` (in stream order); return what they settled.

        Raises ValueError if timestamps go back (Materialize never does that).
        """
        out = Consolidated()
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
                if self._frontier is None or ts > self._frontier:
                    self._frontier = ts
                if not self._snapshot_done and ts != self._as_of:
                    self._finish_snapshot(out)
                snapshot_open = not self._snapshot_done
            if snapshot_open:
                snapshot_rows += 1
                if key in self._flushed:
                    out.violations.append(_late_snapshot_row(ts, key, tag, values))
                    continue
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
        out.snapshot_rows = snapshot_rows
        frontier = self.frontier
        if frontier is not None and frontier != self._reported:
            out.frontier = self._reported = frontier
        return out

    def _complete(self, out: Consolidated) -> None:
        """The timestamp in hand is complete: settle every key it touched."""
        ts = self._in_hand
        assert ts is not None
        self._settle(ts, out)
        self._in_hand = None
        if not self._snapshot_done:
            self._finish_snapshot(out)

    def _finish_snapshot(self, out: Consolidated) -> None:
        self._snapshot_done = True
        out.snapshot_complete = True
        self._flushed = set()

    def _hand_out_snapshot(self, out: Consolidated) -> None:
        ts = self._in_hand
        assert ts is not None
        self._flushed.update(self._snap)
        self._flushed.update(self._pending)
        self._flushed.update(self._states)
        self._settle(ts, out)

    def _settle(self, ts: int, out: Consolidated) -> None:
        changes = out.changes
        changes.extend([(ts, key, values) for key, values in self._snap.items()])
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
