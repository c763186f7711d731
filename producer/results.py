"""A FETCH's rows left in libpq's result, for the C path of the snapshot.

Why (measured with py-spy on ``python -m bench.producer``'s backlog, 100,000 rows,
psycopg 3.3.9): psycopg's ``fetchall`` builds a tuple and a ``str`` per value,
~1.0 µs of the producer's CPU a row of the FreshMart view, and freeing those
objects once the row's document is written costs about as much again; the
snapshot's fast path (producer.consolidate ``feed_rows``) only looks at four
values of a row and hands the rest to the document writer. :class:`ResultRows`
leaves the rows in the result: ``_speedups.hold_snapshot_result`` holds a snapshot
row as a ``RawRow`` (the result and a row number) and ``pack_upserts`` writes its
document from libpq's text (producer/_speedups.c, "Raw results"); every other use
of a row loads it with psycopg's own loaders when it is asked for, so what the rows
say is exactly what ``fetchall`` would have returned
(tests/unit/producer/test_results.py compares both).

Used only where all of it holds (:func:`raw_kinds`, :func:`producer.native.raw_results`):
the C path is built, one libpq is loaded, the connection speaks UTF-8, and every
view column is of a type the C writer reads from text (text, integers, bool,
numeric, timestamps, json); else the FETCH is read with ``fetchall`` as before.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final, overload

import psycopg
from psycopg import abc
from psycopg.adapt import Transformer

from . import native

__all__ = ["RAW_MIN_ROWS", "ResultRows", "raw_kind_of_type", "raw_kinds"]

# A FETCH of fewer rows is loaded with fetchall: a live tick's handful of changes
# takes the general path anyway, and a Transformer per FETCH is not free.
RAW_MIN_ROWS: Final = 64

# PostgreSQL type OID -> how the C writer turns its text into JSON (_speedups.c RAW_*):
# what producer.documents writes for the value psycopg loads from that text.
_RAW_KINDS: Final[dict[int, bytes]] = {
    25: b"s",  # text
    1043: b"s",  # varchar
    1042: b"s",  # bpchar (psycopg loads it as the text, padding included)
    19: b"s",  # name
    20: b"i",  # int8
    21: b"i",  # int2
    23: b"i",  # int4
    16: b"b",  # bool
    1700: b"n",  # numeric (loaded as text: producer.documents.register_text_loaders)
    1184: b"t",  # timestamptz (text too)
    1114: b"t",  # timestamp
    114: b"j",  # json
    3802: b"j",  # jsonb
}


def raw_kind_of_type(type_oid: int) -> bytes | None:
    """The C writer's kind for a column of type ``type_oid``, None if it has none."""
    return _RAW_KINDS.get(type_oid)


def raw_kinds(description: Sequence[psycopg.Column], first: int, key_index: int) -> bytes | None:
    """The raw kinds of the view columns (``description[first:]``), or None when the
    result cannot be read raw: a column of another type, or a key that is not text
    (the fast path holds only str keys)."""
    kinds = [raw_kind_of_type(column.type_code) for column in description[first:]]
    if any(kind is None for kind in kinds) or kinds[key_index - first] != b"s":
        return None
    return b"".join(kind for kind in kinds if kind is not None)


def _view_values(transformer: abc.Transformer, first: int, row: int) -> tuple[Any, ...]:
    values: tuple[Any, ...] = transformer.load_row(row, tuple)[first:]
    return values


class ResultRows(Sequence[tuple[Any, ...]]):
    """The rows of one FETCH result as tuples, loaded when asked for (``rows[i]``,
    ``rows[i:j]``, iteration), and ``raw``, the result for ``hold_snapshot_result``.

    ``cursor`` holds the result (psycopg's ``pgresult``); ``first`` is the row's first
    view column, ``kinds`` the view columns' raw kinds (:func:`raw_kinds`). Raises
    RuntimeError if the C path cannot read results (check
    :func:`producer.native.raw_results` first).
    """

    __slots__ = ("_count", "_transformer", "raw")

    def __init__(self, cursor: psycopg.AsyncCursor[Any], first: int, kinds: bytes) -> None:
        speedups = native.speedups
        result = cursor.pgresult
        # the libpq PGresult* (psycopg's pq implementations have it; its Protocol does not)
        address = getattr(result, "pgresult_ptr", None)
        if speedups is None or result is None or not isinstance(address, int):
            raise RuntimeError("no result, or the C path is not built")
        transformer: abc.Transformer = Transformer.from_context(cursor)
        transformer.set_pgresult(result)
        self._transformer = transformer
        self._count = result.ntuples
        load = functools.partial(_view_values, transformer, first)
        self.raw = speedups.RawResult(result, address, first, kinds, load)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._transformer.load_rows(start, max(start, stop), tuple)
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("ResultRows index out of range")
        row: tuple[Any, ...] = self._transformer.load_row(index, tuple)
        return row
