"""What one SUBSCRIBE row says: a progress statement, a diff, or an upsert-envelope state.

Pure, no I/O. Materialize's documented layout with ``WITH (PROGRESS)``:

* diffs (default envelope): ``mz_timestamp, mz_progressed, mz_diff, <view columns…>``;
* ``ENVELOPE UPSERT (KEY (k))``: ``mz_timestamp, mz_progressed, mz_state, k, <other columns…>``
  — key columns first; ``mz_state`` is ``upsert``, ``delete`` or ``key_violation``.

A row with ``mz_progressed`` true carries only ``mz_timestamp``: no more rows below
it will come. Values arrive as psycopg loaded them (text for numeric and
timestamps, see :mod:`producer.documents`); ``mz_timestamp`` is numeric, so it is
text here and is turned into an ``int``. (The rows of a snapshot are not parsed
here at all on the C path: producer.consolidate ``feed_rows`` holds them straight
from libpq's result, producer.results; only a row that is not a first +1 row of a
new key at the snapshot's timestamp is loaded and comes here.)

Rows that break the layout (a NULL key, an unknown state, a NULL diff) are
:class:`Rejected`: the caller logs and dead-letters them and goes on. So is a row
whose key the stream codec or OpenSearch cannot carry — empty, or longer than
OpenSearch's 512-byte ``_id`` — each alone, with its key and values, so that one
bad key costs only its own change (on the consumer it would cost its whole entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

__all__ = [
    "DELETE_STATE",
    "FIRST_VALUE",
    "KEY_VIOLATION_STATE",
    "MAX_KEY_BYTES",
    "UPSERT_STATE",
    "Diff",
    "DiffEvent",
    "Envelope",
    "Event",
    "Layout",
    "LayoutError",
    "Progress",
    "Rejected",
    "Row",
    "RowError",
    "Upsert",
    "UpsertEvent",
    "Values",
    "key_problem",
    "parse_row",
    "parse_rows",
]

Envelope = Literal["diffs", "upsert"]
Row = Sequence[object]

# OpenSearch's limit on an _id, in UTF-8 bytes (consumer.bulk.MAX_ID_BYTES)
MAX_KEY_BYTES: Final = 512
# A key of at most this many characters is at most MAX_KEY_BYTES bytes in UTF-8.
_SURELY_SHORT: Final = MAX_KEY_BYTES // 4

UPSERT_STATE: Final = "upsert"
DELETE_STATE: Final = "delete"
KEY_VIOLATION_STATE: Final = "key_violation"
_STATES = frozenset({UPSERT_STATE, DELETE_STATE, KEY_VIOLATION_STATE})

# Both envelopes put three bookkeeping columns before the relation's own.
_TS, _PROGRESSED, _DIFF_OR_STATE, _FIRST_VALUE = 0, 1, 2, 3
#: Index of a row's first view column (after mz_timestamp, mz_progressed, mz_diff/mz_state).
FIRST_VALUE: Final = _FIRST_VALUE


class LayoutError(ValueError):
    """The cursor's columns are not what the subscription should produce."""


class RowError(ValueError):
    """One row cannot be understood; it is skipped and logged."""


class Progress(NamedTuple):
    """No more rows with a timestamp below ``ts`` will arrive."""

    ts: int


class Diff(NamedTuple):
    """``diff`` copies of the row ``values`` were inserted (>0) or retracted (<0) at ``ts``.

    :func:`parse_rows` returns plain tuples of this shape (equal to a ``Diff``):
    building a NamedTuple per row costs ~0.4 µs, 4 % of the per-row budget.
    """

    ts: int
    key: str
    diff: int
    values: tuple[object, ...]


class Upsert(NamedTuple):
    """ENVELOPE UPSERT: the key's state after ``ts``; ``values`` is None unless ``upsert``.

    Like :class:`Diff`, parse_rows gives plain tuples of this shape.
    """

    ts: int
    key: str
    state: str
    values: tuple[object, ...] | None


Values = tuple[object, ...]
DiffEvent = tuple[int, str, int, Values]
UpsertEvent = tuple[int, str, str, Values | None]
Event = Progress | DiffEvent | UpsertEvent


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things are in the rows of one subscription.

    ``columns`` are the relation's column names in row order (from index 3 on);
    they are the document's field names. ``key_index`` indexes the whole row.
    """

    envelope: Envelope
    columns: tuple[str, ...]
    key_index: int

    @classmethod
    def from_columns(cls, names: Sequence[str], envelope: Envelope, key_column: str) -> Layout:
        """The layout of a cursor whose column names are ``names``.

        Raises :class:`LayoutError` when the bookkeeping columns are missing (the
        subscription was not declared WITH (PROGRESS)) or ``key_column`` is absent.
        """
        third = "mz_diff" if envelope == "diffs" else "mz_state"
        expected = ["mz_timestamp", "mz_progressed", third]
        if list(names[:_FIRST_VALUE]) != expected:
            raise LayoutError(
                f"SUBSCRIBE columns start with {list(names[:_FIRST_VALUE])}, expected {expected}"
            )
        columns = tuple(names[_FIRST_VALUE:])
        if key_column not in columns:
            raise LayoutError(f"key column {key_column!r} is not among the view's columns")
        if envelope == "upsert" and columns[0] != key_column:
            raise LayoutError(
                f"ENVELOPE UPSERT puts the key first, but the first column is {columns[0]!r}"
            )
        return cls(envelope, columns, _FIRST_VALUE + columns.index(key_column))


def parse_row(layout: Layout, row: Row) -> Event:
    """The event one row stands for. Raises :class:`RowError` for a malformed row."""
    rejected: list[Rejected] = []
    events = parse_rows(layout, (row,), rejected)
    if rejected:
        raise RowError(rejected[0].reason)
    return events[0]


class Rejected(NamedTuple):
    """A row :func:`parse_rows` skipped: its timestamp (0 if unreadable), why, the row,
    and its key when the key is what is wrong (then the row's values are its document)."""

    ts: int
    reason: str
    row: tuple[object, ...]
    key: str | None = None


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a stream entry's key and an OpenSearch ``_id``, or None."""
    if not key:
        return "is empty"
    if len(key) > _SURELY_SHORT:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            return "is not valid Unicode"
        if size > MAX_KEY_BYTES:
            return f"is {size} bytes, OpenSearch ids are at most {MAX_KEY_BYTES}"
    return None


def parse_rows(layout: Layout, rows: Sequence[Row], rejected: list[Rejected]) -> list[Event]:
    """The events of a batch of rows, in order; malformed rows go to ``rejected``.

    The hot path: one FETCH worth of rows per call, so the per-row work is a
    handful of index operations (``mz_timestamp`` text is converted once per run
    of rows sharing it).
    """
    out: list[Event] = []
    append = out.append
    key_index = layout.key_index
    upsert = layout.envelope == "upsert"
    last_raw: object = None
    ts = 0
    for row in rows:
        raw = row[_TS]
        # Equal texts are equal timestamps; equal values of other types need not be
        # (5 == 5.0, but 5.0 is not a Materialize timestamp), so only text is reused.
        if raw != last_raw or type(raw) is not str:
            try:
                ts = _timestamp(raw)
            except RowError as error:
                rejected.append(Rejected(0, str(error), tuple(row)))
                continue
            last_raw = raw
        if row[_PROGRESSED]:
            append(Progress(ts))
            continue
        key = row[key_index]
        tag = row[_DIFF_OR_STATE]
        if key is None:
            name = layout.columns[key_index - _FIRST_VALUE]
            rejected.append(Rejected(ts, f"key column {name} is NULL", tuple(row)))
            continue
        if type(key) is not str:
            key = str(key)
        if not key or len(key) > _SURELY_SHORT:
            problem = key_problem(key)
            if problem is not None:
                name = layout.columns[key_index - _FIRST_VALUE]
                reason = f"key column {name} {problem}"
                rejected.append(Rejected(ts, reason, tuple(row), key))
                continue
        if upsert:
            if tag not in _STATES:
                rejected.append(Rejected(ts, f"unknown mz_state {tag!r}", tuple(row)))
                continue
            values = tuple(row[_FIRST_VALUE:]) if tag == UPSERT_STATE else None
            append((ts, key, str(tag), values))
        elif isinstance(tag, int) and tag != 0:
            append((ts, key, tag, tuple(row[_FIRST_VALUE:])))
        else:
            reason = f"mz_diff is {tag!r}, expected a non-zero integer"
            rejected.append(Rejected(ts, reason, tuple(row)))
    return out


def _timestamp(raw: object) -> int:
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str | bytes):
        try:
            return int(raw)
        except ValueError:
            pass
    # A Decimal (default numeric loader) or a fractional text: Materialize timestamps
    # are whole milliseconds, anything else is a malformed row.
    try:
        value = int(str(raw))
    except ValueError:
        raise RowError(f"mz_timestamp {raw!r} is not an integer") from None
    return value
