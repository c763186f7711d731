"""Changes made up at a set rate from the view's own rows: a source faster than any writer.

A bench that must find the pipeline's ceiling cannot use the FreshMart writer: one
change a PostgreSQL transaction tops out at a few hundred a second on this box.
With ``MZEMU_SYNTHETIC_RATE`` set, every tick also changes ``rate × tick`` rows of
the kept view (counted from when the rate was set: exact over any number of ticks),
visiting the keys in turn: each keeps its columns but one text column (``MZEMU_SYNTHETIC_COLUMN``),
which reads ``synthetic <ts> <n>``, so every change is a real retraction and
insertion of a whole row, as Materialize would emit for an upstream update. The
rows never reach PostgreSQL: a reconcile or restart of the emulator forgets them.

Pure module: no I/O; the engine calls :meth:`SyntheticChanges.rows` inside a tick.
"""

from __future__ import annotations

from collections.abc import Collection as Keys
from collections.abc import Mapping

from devstack.mzemu.collection import Row

__all__ = ["SyntheticChanges"]


class SyntheticChanges:
    """``rate`` changes a second, one column of ``column`` (its index) rewritten."""

    def __init__(self, rate: int, column: int) -> None:
        self.rate = rate
        self.column = column
        self.made = 0
        self._since: int | None = None  # ts the current rate started at
        self._made_since = 0  # changes made since then
        self._queue: list[object] = []

    def rows(
        self, by_key: Mapping[object, Mapping[Row, int]], ts: int, skip: Keys[object]
    ) -> list[Row]:
        """The new rows for this tick at ``ts``: one per chosen key, none of ``skip``."""
        if self._since is None:
            self._since = ts
            return []
        # whole numbers: the count due is exact however many ticks it is spread over
        due = self.rate * (ts - self._since) // 1000 - self._made_since
        made: list[Row] = []
        chosen: set[object] = set()
        while due > 0:
            if not self._queue:
                self._queue = [key for key in by_key if key not in skip]
                self._queue.reverse()  # pop() from the end visits keys in order
                if not self._queue or chosen.issuperset(self._queue):
                    break  # fewer keys than changes due this tick
            key = self._queue.pop()
            current = by_key.get(key)
            if not current or key in skip or key in chosen:
                continue
            old = next(iter(current))
            values = list(old.values)
            values[self.column] = f"synthetic {ts} {self.made}".encode()
            made.append(Row(tuple(values)))
            chosen.add(key)
            self.made += 1
            due -= 1
        self._made_since += len(made)
        return made

    def set_rate(self, rate: int, ts: int) -> None:
        """From ``ts`` on, ``rate`` changes a second (what was due before is dropped)."""
        self.rate, self._since, self._made_since = rate, ts, 0
