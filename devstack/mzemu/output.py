"""SUBSCRIBE output: Materialize's column layout and the encoding of output rows.

A subscription's output is a sequence of events:

* ``(DATA, ts, diff, row)`` — ``mz_timestamp, [mz_progressed = false,] mz_diff, cols``
* ``(UPSERT, ts, state, key, row)`` — ``mz_timestamp, [mz_progressed,] mz_state, key
  cols, value cols`` (value columns NULL for ``delete`` and ``key_violation``)
* ``(PROGRESS, ts)`` — ``mz_timestamp, true`` and NULL everywhere else

and this module turns batches of them into DataRow messages (text, binary or mixed
result formats) or COPY TO STDOUT data (text or binary). Pure module: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from devstack.mzemu.collection import Row
from devstack.mzemu.values import (
    BINARY_COPY_HEADER,
    OID,
    binary_encoder,
    copy_text_escape,
    encode_numeric,
    needs_copy_escape,
    type_info,
)
from devstack.mzemu.wire import ColumnDesc, copy_data, encode_cells

__all__ = ["DATA", "PROGRESS", "UPSERT", "Event", "OutputLayout", "normalize_formats"]

DATA = 0
PROGRESS = 1
UPSERT = 2

Event = tuple[Any, ...]

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_NULL = _I32.pack(-1)
_FALSE_TEXT = _I32.pack(1) + b"f"
_TRUE_TEXT = _I32.pack(1) + b"t"
_FALSE_BIN = _I32.pack(1) + b"\x00"
_TRUE_BIN = _I32.pack(1) + b"\x01"


def _cell(value: bytes) -> bytes:
    return _I32.pack(len(value)) + value


def normalize_formats(formats: Sequence[int], ncols: int) -> tuple[int, ...]:
    """Bind's result-format codes expanded to one per column (none: text, one: all)."""
    if not formats:
        return (0,) * ncols
    if len(formats) == 1:
        return (formats[0],) * ncols
    if len(formats) != ncols:
        from devstack.mzemu.errors import MzError

        raise MzError(
            "08P01",
            f"expected {ncols} field format specifiers, but got {len(formats)}",
        )
    return tuple(formats)


def _mz_type(name: str) -> ColumnDesc:
    info = type_info(OID[name])
    return ColumnDesc("", info.oid, info.typlen, info.typmod)


class OutputLayout:
    """The columns of one subscription's output and how to encode its events."""

    def __init__(
        self,
        relation: Sequence[ColumnDesc],
        progress: bool,
        upsert_key: Sequence[int] | None = None,
    ) -> None:
        self.relation = tuple(relation)
        self.progress = progress
        self.upsert_key = tuple(upsert_key) if upsert_key is not None else None
        cols = [ColumnDesc("mz_timestamp", OID["numeric"], -1, -1)]
        if progress:
            cols.append(ColumnDesc("mz_progressed", OID["bool"], 1, -1))
        if self.upsert_key is None:
            cols.append(ColumnDesc("mz_diff", OID["int8"], 8, -1))
            cols.extend(self.relation)
            self.value_indexes: tuple[int, ...] = tuple(range(len(self.relation)))
        else:
            cols.append(ColumnDesc("mz_state", OID["text"], -1, -1))
            cols.extend(self.relation[i] for i in self.upsert_key)
            self.value_indexes = tuple(
                i for i in range(len(self.relation)) if i not in self.upsert_key
            )
            cols.extend(self.relation[i] for i in self.value_indexes)
        self.columns = tuple(cols)
        self.ncols = len(cols)
        self._prefix = 3 if progress else 2
        self._ts_text: dict[int, bytes] = {}
        self._ts_bin: dict[int, bytes] = {}
        self._diff_text: dict[int, bytes] = {}
        self._relation_encoders: list[Callable[[bytes], bytes]] | None = None

    # -- helpers
    def relation_encoders(self) -> list[Callable[[bytes], bytes]]:
        if self._relation_encoders is None:
            self._relation_encoders = [binary_encoder(c.type_oid, c.name) for c in self.relation]
        return self._relation_encoders

    def check_formats(self, formats: Sequence[int]) -> None:
        """Raise MzError (0A000) if a binary-requested column has no binary encoder."""
        start = self._prefix
        for fmt, col in zip(formats[start:], self.columns[start:], strict=True):
            if fmt == 1:
                binary_encoder(col.type_oid, col.name)

    def _ts_cell(self, ts: int, binary: bool) -> bytes:
        cache = self._ts_bin if binary else self._ts_text
        cell = cache.get(ts)
        if cell is None:
            raw = encode_numeric(str(ts)) if binary else str(ts).encode()
            cell = cache[ts] = _cell(raw)
            if len(cache) > 4096:
                cache.clear()
                cache[ts] = cell
        return cell

    def _diff_cell(self, diff: int, binary: bool) -> bytes:
        if binary:
            return _cell(struct.pack("!q", diff))
        cell = self._diff_text.get(diff)
        if cell is None:
            cell = self._diff_text[diff] = _cell(str(diff).encode())
        return cell

    # -- DataRow encoding
    def data_rows(self, events: Sequence[Event], formats: tuple[int, ...]) -> bytes:
        """DataRow messages for ``events``, concatenated, in per-column result formats."""
        parts: list[bytes] = []
        append = parts.append
        pack = _I32.pack
        count = _I16.pack(self.ncols)
        if not any(formats) and self.upsert_key is None:
            # The hot path: one cached prefix (column count, mz_timestamp, mz_progressed,
            # mz_diff) per (time, diff), and each row's cells encoded once when read.
            prefixes: dict[tuple[int, int], bytes] = {}
            flag = _FALSE_TEXT if self.progress else b""
            for ev in events:
                if ev[0] == DATA:
                    key = (ev[1], ev[2])
                    prefix = prefixes.get(key)
                    if prefix is None:
                        prefix = prefixes[key] = (
                            count
                            + self._ts_cell(ev[1], False)
                            + flag
                            + self._diff_cell(ev[2], False)
                        )
                    cells = ev[3].text_cells()
                    append(b"D")
                    append(pack(len(prefix) + len(cells) + 4))
                    append(prefix)
                    append(cells)
                else:
                    cells = self._progress_cells(ev[1], formats)
                    append(b"D" + pack(len(cells) + 6) + count + cells)
            return b"".join(parts)
        for ev in events:
            cells = self._cells(ev, formats)
            append(b"D" + pack(len(cells) + 6) + count + cells)
        return b"".join(parts)

    def _progress_cells(self, ts: int, formats: tuple[int, ...]) -> bytes:
        cells = self._ts_cell(ts, formats[0] == 1) + (_TRUE_BIN if formats[1] else _TRUE_TEXT)
        return cells + _NULL * (self.ncols - 2)

    def _cells(self, ev: Event, formats: tuple[int, ...]) -> bytes:
        kind = ev[0]
        if kind == PROGRESS:
            return self._progress_cells(ev[1], formats)
        parts = [self._ts_cell(ev[1], formats[0] == 1)]
        pos = 1
        if self.progress:
            parts.append(_FALSE_BIN if formats[1] else _FALSE_TEXT)
            pos = 2
        if kind == DATA:
            parts.append(self._diff_cell(ev[2], formats[pos] == 1))
            row: Row = ev[3]
            rel_formats = formats[pos + 1 :]
            if not any(rel_formats):
                parts.append(row.text_cells())
            elif all(rel_formats):
                parts.append(row.binary_cells(self.relation_encoders()))
            else:
                encoders = self.relation_encoders()
                parts.append(
                    encode_cells(
                        None if v is None else (encoders[i](v) if f else v)
                        for i, (v, f) in enumerate(zip(row.values, rel_formats, strict=True))
                    )
                )
            return b"".join(parts)
        # UPSERT
        state: str = ev[2]
        key: tuple[bytes | None, ...] = ev[3]
        urow: Row | None = ev[4]
        parts.append(_cell(state.encode()))
        assert self.upsert_key is not None
        values: list[bytes | None] = list(key)
        if urow is None:
            values.extend([None] * len(self.value_indexes))
        else:
            values.extend(urow.values[i] for i in self.value_indexes)
        source_indexes = self.upsert_key + self.value_indexes
        encoders = self.relation_encoders() if any(formats[pos + 1 :]) else []
        parts.append(
            encode_cells(
                None
                if v is None
                else (encoders[source_indexes[i]](v) if formats[pos + 1 + i] else v)
                for i, v in enumerate(values)
            )
        )
        return b"".join(parts)

    # -- COPY encoding
    def copy_messages(self, events: Sequence[Event], binary: bool, with_header: bool) -> bytes:
        """CopyData messages, one per event (the binary header goes before the first)."""
        parts: list[bytes] = []
        append = parts.append
        pack = _I32.pack
        if binary:
            formats = (1,) * self.ncols
            count = _I16.pack(self.ncols)
            first = with_header
            for ev in events:
                payload = count + self._cells(ev, formats)
                if first:
                    payload = BINARY_COPY_HEADER + payload
                    first = False
                append(copy_data(payload))
            return b"".join(parts)
        prefixes: dict[tuple[int, int], bytes] = {}
        flag = b"\tf\t" if self.progress else b"\t"
        for ev in events:
            if ev[0] == DATA:
                key = (ev[1], ev[2])
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = (
                        str(ev[1]).encode() + flag + str(ev[2]).encode() + b"\t"
                    )
                text = ev[3].copy_text(copy_text_escape, needs_copy_escape)
                append(b"d")
                append(pack(len(prefix) + len(text) + 5))
                append(prefix)
                append(text)
                append(b"\n")
            else:
                append(copy_data(self._copy_line(ev)))
        return b"".join(parts)

    def _copy_line(self, ev: Event) -> bytes:
        kind = ev[0]
        ts = str(ev[1]).encode()
        if kind == PROGRESS:
            return ts + b"\tt" + b"\t\\N" * (self.ncols - 2) + b"\n"
        head = ts + (b"\tf\t" if self.progress else b"\t")
        if kind == DATA:
            drow: Row = ev[3]
            text = drow.copy_text(copy_text_escape, needs_copy_escape)
            return head + str(ev[2]).encode() + b"\t" + text + b"\n"
        state: str = ev[2]
        key: tuple[bytes | None, ...] = ev[3]
        urow: Row | None = ev[4]
        values: list[bytes | None] = list(key)
        if urow is None:
            values.extend([None] * len(self.value_indexes))
        else:
            values.extend(urow.values[i] for i in self.value_indexes)
        body = b"\t".join(b"\\N" if v is None else copy_text_escape(v) for v in values)
        return head + state.encode() + b"\t" + body + b"\n"

    def event_bytes(self, ev: Event) -> int:
        """Approximate payload size of an event (for the fell-behind budget)."""
        if ev[0] == DATA:
            return 24 + len(ev[3].text_cells())
        if ev[0] == UPSERT:
            row: Row | None = ev[4]
            return 32 + (len(row.text_cells()) if row is not None else 0)
        return 16
