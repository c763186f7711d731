"""Settled changes → stream entries, grouped by partition, packed for XADD.

Pure, no I/O. Several changes of one partition at one timestamp share one ``b``
entry (see :mod:`common.entries`), at most ``max_changes`` of them, so a backlog
costs one XADD per few hundred changes instead of one per change: one XADD per
change through redis-py tops out far below the producer's goal of 100k changes/s.
The cap keeps every entry readable in ``redis-cli XRANGE`` and
bounds what one consumer read holds. A lone change still gets a plain ``u``/``d``
entry, which is what live traffic mostly produces.

Written by hand, because a library costs speed here: an entry's fields are packed
straight into RESP bulk strings (``$<length>\\r\\n<bytes>\\r\\n``) as the changes
are grouped, the length headers coming from small caches. Building the fields dict
with :func:`common.entries.encode_changes` and packing it with
``hiredis.pack_command`` (which formats every length with ``sprintf``) cost about
six times the CPU per change of this, measured on 60,000 FreshMart rows; this
writes the same fields in the same order (``Entry.fields`` decodes them back;
tests/unit/producer/test_batches.py checks them against ``encode_changes``).

A snapshot's entries are packed in C when the documents come from the C writer
(:mod:`producer.native`, see :mod:`producer.documents` "C path"): document and
entry in one pass, a fraction of the CPU of this module plus the Python encoder;
the same entries (tests/unit/producer/test_speedups.py). What the producer
reaches is in the README's "Measured" table (``python -m bench.producer``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, NamedTuple, TypeVar, cast

from ..common.entries import BATCH, COUNT, DELETE, DOC, KEY, MAX_CHANGES_PER_ENTRY, OP, TS, UPSERT
from ..common.partition import partition_of
from . import native

__all__ = ["DEFAULT_MAX_CHANGES", "Entry", "build_entries", "snapshot_entries"]

# ~600-byte documents: a full entry is ~150 KB, one consumer read of a few entries
# stays in the low MB, and per-XADD costs are spread over hundreds of changes.
DEFAULT_MAX_CHANGES: Final = MAX_CHANGES_PER_ENTRY

Fields = dict[bytes, bytes]
V = TypeVar("V")


class Entry(NamedTuple):
    """One entry to XADD to partition ``partition``.

    ``body`` is the entry's field/value pairs as ``width`` RESP bulk strings, ready
    to follow ``XADD <stream> *``; ``changes`` of them are changes, ``upserts`` of
    those upserts (the rest deletes); ``op`` is the entry's ``op`` field.
    """

    partition: int
    op: bytes
    changes: int
    upserts: int
    body: bytes
    width: int

    @property
    def fields(self) -> Fields:
        """The fields as ``XRANGE`` shows them (decodes ``body``; for tests and logs).

        Raises ValueError if ``body`` is not ``width`` well-formed bulk strings.
        """
        items = _bulk_strings(self.body)
        if len(items) != self.width or len(items) % 2:
            raise ValueError(f"entry body holds {len(items)} bulk strings, not {self.width}")
        return dict(zip(items[::2], items[1::2], strict=True))


class _Headers(dict[int, bytes]):
    """``headers[n]``: the bytes that end the previous bulk string and start one of
    ``n`` bytes beginning with ``prefix``. Filled on first use: keys and documents
    come in a few hundred distinct lengths."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__()
        self._prefix = prefix

    def __missing__(self, length: int) -> bytes:
        header = b"\r\n$%d\r\n%b" % (length + len(self._prefix), self._prefix)
        self[length] = header
        return header


_UPSERT_KEY: Final = _Headers(UPSERT + b":")
_DELETE_KEY: Final = _Headers(DELETE + b":")
_VALUE: Final = _Headers(b"")
_EMPTY_VALUE: Final = _VALUE[0]
_END: Final = b"\r\n"


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


_TS_FIELD: Final = _bulk(TS)
_OP_FIELD: Final = _bulk(OP)
_KEY_FIELD: Final = _bulk(KEY)
_DOC_FIELD: Final = _bulk(DOC)
_BATCH_HEAD: Final = _bulk(OP) + _bulk(BATCH) + _bulk(COUNT)
_UPSERT_OP: Final = _bulk(UPSERT)
_DELETE_OP: Final = _bulk(DELETE)


class _Grouper:
    """The open entries of one timestamp, one per partition, closed at ``cap`` changes
    or once their keys and documents reach ``max_bytes`` (0: no byte cap).

    An open entry is a list of pieces: a placeholder for the head (known only when
    the entry closes: it holds the count), then four pieces per change — key
    header, key, value header, value — where every header first ends the previous
    bulk string. So the body is one ``bytes.join`` when the entry closes, and an
    entry is full when its list is ``full`` long.
    """

    __slots__ = ("_deletes", "_ts", "bytes", "full", "max_bytes", "open", "out")

    def __init__(
        self, ts: int, partitions: int, cap: int, out: list[Entry], max_bytes: int = 0
    ) -> None:
        self._ts = str(ts).encode()
        self.full = 1 + 4 * cap
        self.max_bytes = max_bytes
        self.open: list[list[bytes]] = [[b""] for _ in range(partitions)]
        self.bytes = [0] * partitions
        self._deletes = [0] * partitions
        self.out = out

    def add(self, partition: int, key: bytes, doc: bytes | None) -> None:
        pieces = self.open[partition]
        if doc is None:
            head, value_head, value = _DELETE_KEY[len(key)], _EMPTY_VALUE, b""
            self._deletes[partition] += 1
        else:
            head, value_head, value = _UPSERT_KEY[len(key)], _VALUE[len(doc)], doc
        pieces += (head, key, value_head, value)
        if self.max_bytes:
            # the entry's body as the C writer counts it (pack_upserts): the same pieces
            self.bytes[partition] += len(head) + len(key) + len(value_head) + len(value)
            if self.bytes[partition] >= self.max_bytes:
                self.close(partition)
                return
        if len(pieces) == self.full:
            self.close(partition)

    def close(self, partition: int) -> None:
        pieces = self.open[partition]
        count = (len(pieces) - 1) // 4
        if not count:
            return
        upserts = count - self._deletes[partition]
        self.open[partition] = [b""]
        self._deletes[partition] = 0
        self.bytes[partition] = 0
        ts_value = _bulk(self._ts)
        if count == 1:  # a plain u/d entry: ts, op, key[, doc]
            key, doc = pieces[2], pieces[4]
            head = _TS_FIELD + ts_value + _OP_FIELD
            if upserts:
                body = b"".join((head, _UPSERT_OP, _KEY_FIELD, _bulk(key), _DOC_FIELD, _bulk(doc)))
                self.out.append(Entry(partition, UPSERT, 1, 1, body, 8))
            else:
                body = b"".join((head, _DELETE_OP, _KEY_FIELD, _bulk(key)))
                self.out.append(Entry(partition, DELETE, 1, 0, body, 6))
            return
        # The head's last bulk string (the count) is ended by the first key header.
        pieces[0] = _TS_FIELD + ts_value + _BATCH_HEAD + b"$%d\r\n%d" % (len(str(count)), count)
        pieces.append(_END)
        self.out.append(Entry(partition, BATCH, count, upserts, b"".join(pieces), 6 + 2 * count))

    def close_all(self) -> None:
        for partition in range(len(self.open)):
            self.close(partition)


def build_entries(
    changes: Iterable[tuple[int, bytes, bytes | None]],
    partitions: int,
    max_changes: int = DEFAULT_MAX_CHANGES,
    max_bytes: int = 0,
) -> list[Entry]:
    """Entries for ``(ts, key, doc-or-None)`` changes given in timestamp order.

    An entry holds at most ``max_changes`` changes and is closed once its keys and
    documents reach ``max_bytes`` (MAX_ENTRY_BYTES; 0: no byte cap), so it holds at
    most that plus one document. Within a partition, entries keep the changes'
    timestamp order; keys must be distinct within one timestamp (consolidation
    guarantees it). Raises ValueError if they are not, or if ``max_changes`` < 1.
    """
    if max_changes < 1:
        raise ValueError("max_changes must be at least 1")
    out: list[Entry] = []
    grouper: _Grouper | None = None
    current_ts: int | None = None
    seen: set[bytes] = set()
    for ts, key, doc in changes:
        if ts != current_ts or grouper is None:
            if grouper is not None:
                grouper.close_all()
            grouper = _Grouper(ts, partitions, max_changes, out, max_bytes)
            current_ts = ts
            seen.clear()
        if key in seen:
            raise ValueError(f"key {key!r} changes twice at ts {ts}")
        seen.add(key)
        grouper.add(partition_of(key, partitions), key, doc)
    if grouper is not None:
        grouper.close_all()
    return out


def snapshot_entries(
    ts: int,
    rows: Mapping[str, V],
    encode: Callable[[V, int], bytes],
    partitions: int,
    max_changes: int = DEFAULT_MAX_CHANGES,
    *,
    max_bytes: int = 0,
    max_doc_bytes: int = 0,
    oversize: list[tuple[str, int]] | None = None,
) -> list[Entry]:
    """Upsert entries for ``rows`` (key → values, all at ``ts``), documents by ``encode``.

    The snapshot's hot path: :func:`build_entries` of ``(ts, key, encode(values,
    ts))`` without building those tuples — keys of a mapping are distinct already.
    A document longer than ``max_doc_bytes`` (MAX_DOCUMENT_BYTES; 0: no limit) is
    left out and its ``(key, size)`` appended to ``oversize``. Raises ValueError if
    ``max_changes`` < 1.
    """
    if max_changes < 1:
        raise ValueError("max_changes must be at least 1")
    out: list[Entry] = []
    if not rows:
        return out
    speedups = native.speedups
    if speedups is not None and isinstance(encode, speedups.DocumentWriter) and type(rows) is dict:
        snapshot = cast(dict[str, Sequence[object]], rows)  # V: what encode takes
        packed = speedups.pack_upserts(
            encode, snapshot, ts, partitions, max_changes, max_bytes, max_doc_bytes, oversize
        )
        if packed is not None:  # None: a ts the C path does not write (not an int)
            return [
                Entry(p, BATCH, n, n, body, 6 + 2 * n) if n > 1 else Entry(p, UPSERT, 1, 1, body, 8)
                for p, n, body in packed
            ]
    grouper = _Grouper(ts, partitions, max_changes, out, max_bytes)
    if max_bytes or max_doc_bytes:  # the loop below, with the limits: not the hot path
        for key, values in rows.items():
            doc = encode(values, ts)
            if max_doc_bytes and len(doc) > max_doc_bytes:
                if oversize is not None:
                    oversize.append((key, len(doc)))
                continue
            encoded = key.encode()
            grouper.add(partition_of(encoded, partitions), encoded, doc)
        grouper.close_all()
        return out
    # _Grouper.add inlined, for upserts only: this loop runs once per snapshot row.
    opened = grouper.open
    full = grouper.full
    key_headers = _UPSERT_KEY
    value_headers = _VALUE
    for key, values in rows.items():
        encoded = key.encode()
        doc = encode(values, ts)
        partition = partition_of(encoded, partitions)
        pieces = opened[partition]
        pieces += (key_headers[len(encoded)], encoded, value_headers[len(doc)], doc)
        if len(pieces) == full:
            grouper.close(partition)
    grouper.close_all()
    return out


def _bulk_strings(body: bytes) -> list[bytes]:
    items: list[bytes] = []
    at = 0
    while at < len(body):
        if body[at : at + 1] != b"$":
            raise ValueError(f"no bulk string at offset {at}")
        end = body.index(b"\r\n", at)
        length = int(body[at + 1 : end])
        start = end + 2
        if body[start + length : start + length + 2] != b"\r\n":
            raise ValueError(f"bulk string at offset {at} is not {length} bytes long")
        items.append(body[start : start + length])
        at = start + length + 2
    return items
