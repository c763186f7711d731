"""A keyed collection with retained history: the emulator's arrangement of the view.

Materialize maintains a view as a collection of ``(row, time, diff)`` updates. The
emulator keeps the current contents (key -> multiset of rows) and the consolidated
updates of every tick newer than ``since``, which is what ``AS OF`` needs: the
contents at any ``t >= since`` are the current contents minus the updates after
``t``. Pure module: no I/O.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from devstack.mzemu.wire import encode_cells

__all__ = [
    "Collection",
    "Row",
    "Update",
    "apply_updates",
    "consolidate",
    "diff_multisets",
    "upsert_envelope",
]

RowValues = tuple[bytes | None, ...]


class Row:
    """One row of the view, as PostgreSQL's text output of each column.

    Equality and hash are those of ``values``; encodings are computed once and cached,
    because the same row is sent to every subscription and often more than once.
    """

    __slots__ = ("_binary_cells", "_copy_text", "_hash", "_text_cells", "values")

    def __init__(
        self, values: RowValues, text_cells: bytes | None = None, copy_text: bytes | None = None
    ) -> None:
        self.values = values
        self._hash = hash(values)
        self._text_cells = text_cells
        self._binary_cells: bytes | None = None
        self._copy_text = copy_text

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and (self is other or self.values == other.values)

    def __repr__(self) -> str:
        return f"Row({self.values!r})"

    def text_cells(self) -> bytes:
        cells = self._text_cells
        if cells is None:
            cells = self._text_cells = encode_cells(self.values)
        return cells

    def binary_cells(self, encoders: Sequence[Callable[[bytes], bytes]]) -> bytes:
        cells = self._binary_cells
        if cells is None:
            cells = self._binary_cells = encode_cells(
                None if v is None else enc(v) for v, enc in zip(self.values, encoders, strict=True)
            )
        return cells

    def copy_text(
        self, escape: Callable[[bytes], bytes], needs_escape: Callable[[bytes], object]
    ) -> bytes:
        """The row as a COPY text line body (no newline); ``needs_escape`` is a fast probe."""
        text = self._copy_text
        if text is None:
            values = self.values
            if needs_escape(b"".join(v for v in values if v is not None)):
                text = b"\t".join(b"\\N" if v is None else escape(v) for v in values)
            else:
                text = b"\t".join(b"\\N" if v is None else v for v in values)
            self._copy_text = text
        return text


class Update(NamedTuple):
    """A consolidated change: ``diff`` copies of ``row`` added (or removed, if negative)."""

    row: Row
    diff: int


def diff_multisets(old: dict[Row, int], new: dict[Row, int]) -> list[Update]:
    """Consolidated updates turning multiset ``old`` into ``new`` (no zero diffs)."""
    out = [Update(row, new.get(row, 0) - count) for row, count in old.items()]
    out = [u for u in out if u.diff]
    out.extend(Update(row, count) for row, count in new.items() if row not in old)
    return out


def consolidate(updates: Iterable[Update]) -> list[Update]:
    """Sum the diffs of equal rows and drop the ones that cancel out."""
    acc: dict[Row, int] = {}
    for u in updates:
        acc[u.row] = acc.get(u.row, 0) + u.diff
    return [Update(row, d) for row, d in acc.items() if d]


def apply_updates(contents: Counter[Row], updates: Iterable[Update], sign: int = 1) -> None:
    """Add (sign=1) or retract (sign=-1) ``updates`` to a multiset, dropping empty rows."""
    for u in updates:
        count = contents[u.row] + sign * u.diff
        if count:
            contents[u.row] = count
        else:
            del contents[u.row]


class Collection:
    """Current contents by key, plus the per-timestamp updates still retained.

    ``key_of`` extracts the key from a row; ``None`` keys all rows under one key, which
    is how a re-evaluated query (no key) is kept. ``since`` is the oldest readable
    time: updates at times ``<= since`` have been folded into the past.
    """

    def __init__(self, key_of: Callable[[Row], object], rng: random.Random | None = None):
        self.key_of = key_of
        self.by_key: dict[object, dict[Row, int]] = {}
        self.history: list[tuple[int, list[Update]]] = []
        self.since = 0
        self.upper = 0  # every time < upper is final
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return sum(sum(rows.values()) for rows in self.by_key.values())

    def load(self, rows: Iterable[Row], ts: int) -> None:
        """Initial contents at ``ts`` (the collection is readable from ``ts`` on)."""
        self.by_key.clear()
        self.history.clear()
        for row in rows:
            bucket = self.by_key.setdefault(self.key_of(row), {})
            bucket[row] = bucket.get(row, 0) + 1
        self.since = ts
        self.upper = ts + 1

    def replace(self, keys: Iterable[object], rows: Iterable[Row], ts: int) -> list[Update]:
        """Make ``rows`` the contents of ``keys`` at ``ts``; returns the updates at ``ts``.

        Rows whose key is not in ``keys`` are still accepted (and their key replaced),
        so a caller may pass the re-read rows of a superset. Raises ValueError if
        ``ts`` is not beyond the upper frontier.
        """
        if ts < self.upper:
            raise ValueError(f"timestamp {ts} is not beyond the frontier {self.upper}")
        fresh: dict[object, dict[Row, int]] = {key: {} for key in keys}
        for row in rows:
            bucket = fresh.setdefault(self.key_of(row), {})
            bucket[row] = bucket.get(row, 0) + 1
        updates: list[Update] = []
        for key, new in fresh.items():
            old = self.by_key.get(key, {})
            updates.extend(diff_multisets(old, new))
            if new:
                self.by_key[key] = new
            else:
                self.by_key.pop(key, None)
        self._rng.shuffle(updates)
        if updates:
            self.history.append((ts, updates))
        self.upper = ts + 1
        return updates

    def advance(self, ts: int) -> None:
        """Close every time ``<= ts`` without changes (an idle tick)."""
        self.upper = max(self.upper, ts + 1)

    def compact(self, since: int) -> None:
        """Forget history at times ``<= since``; reads below ``since`` become invalid."""
        since = min(since, self.upper - 1)
        if since <= self.since:
            return
        self.since = since
        keep = 0
        while keep < len(self.history) and self.history[keep][0] <= since:
            keep += 1
        del self.history[:keep]

    def snapshot_items(self, ts: int) -> list[tuple[Row, int]]:
        """The contents at ``ts`` as ``(row, count)`` pairs (requires ``since <= ts < upper``).

        Raises ValueError outside the readable range.
        """
        if ts < self.since or ts >= self.upper:
            raise ValueError(f"{ts} is outside the readable range [{self.since}, {self.upper})")
        later = [u for t, batch in self.history if t > ts for u in batch]
        if not later:
            out = [item for rows in self.by_key.values() for item in rows.items()]
        else:
            contents: Counter[Row] = Counter()
            for rows in self.by_key.values():
                contents.update(rows)
            apply_updates(contents, later, sign=-1)
            out = [item for item in contents.items() if item[1]]
        # A snapshot holds only insertions, so a rotation varies its order enough and
        # costs far less than a shuffle of every row.
        if out:
            cut = self._rng.randrange(len(out))
            out = out[cut:] + out[:cut]
        return out

    def snapshot_at(self, ts: int) -> list[Update]:
        """:meth:`snapshot_items` as ``+count`` updates."""
        return [Update(row, n) for row, n in self.snapshot_items(ts)]

    def updates_between(self, lower: int, upper: int) -> list[tuple[int, list[Update]]]:
        """Retained per-time updates with ``lower < t < upper``, in time order."""
        return [(t, batch) for t, batch in self.history if lower < t < upper]


def upsert_envelope(
    updates: Sequence[Update], key_indexes: Sequence[int]
) -> list[tuple[str, RowValues, Row | None]]:
    """Materialize's ENVELOPE UPSERT for the updates of one timestamp.

    Per key, sorted by key: a lone +1 is ``upsert`` of that row, a lone -1 is
    ``delete``, a -1 and a +1 is ``upsert`` of the new row, anything else (two live
    rows, a diff of 2, ...) is ``key_violation``. Returns (state, key values, row or
    None) in key order.
    """
    groups: dict[RowValues, list[Update]] = {}
    for u in updates:
        key = tuple(u.row.values[i] for i in key_indexes)
        groups.setdefault(key, []).append(u)
    out: list[tuple[str, RowValues, Row | None]] = []
    for key in sorted(groups, key=_sort_key):
        group = sorted(groups[key], key=lambda u: u.diff)
        diffs = [u.diff for u in group]
        if diffs == [1]:
            out.append(("upsert", key, group[0].row))
        elif diffs == [-1]:
            out.append(("delete", key, None))
        elif diffs == [-1, 1]:
            out.append(("upsert", key, group[1].row))
        else:
            out.append(("key_violation", key, None))
    return out


def _sort_key(values: RowValues) -> tuple[tuple[int, bytes], ...]:
    # NULL sorts last, as Materialize orders Datum::Null after every value.
    return tuple((1, b"") if v is None else (0, v) for v in values)
