"""The stream entry codec: what an entry in ``searchsync:{<view>:p<N>}`` holds.

Pure functions, no I/O. Field names and values are bytes, exactly as XADD takes
them and XREADGROUP/XRANGE return them, so ``redis-cli XRANGE`` shows:

=========  ============================================================
``op``     other fields
=========  ============================================================
``u``      ``ts``, ``key``, ``doc`` — upsert; ``doc`` is the JSON document
``d``      ``ts``, ``key`` — delete
``b``      ``ts``, ``n`` then one pair per change: ``u:<key>`` → document,
           ``d:<key>`` → empty — several changes of one partition at one ts
``p``      ``ts`` — progress: every change below ``ts`` is already in this stream
``r``      ``ts`` — reconcile marker: a snapshot was written at ``ts``;
           once applied everywhere, documents with versions below it are stale
=========  ============================================================

``ts`` is the Materialize timestamp (decimal ms) and becomes the OpenSearch
external version. Documents are encoded once by the producer and never parsed
again: the consumer copies ``doc`` bytes into the ``_bulk`` body.

A dead-letter entry (``searchsync:{<view>}:dlq``) carries one change, the reason it
was rejected and where it came from; see :class:`DeadLetter`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

__all__ = [
    "BATCH",
    "COUNT",
    "DELETE",
    "DOC",
    "KEY",
    "MAX_CHANGES_PER_ENTRY",
    "OP",
    "OP_NAMES",
    "PROGRESS",
    "RECONCILE",
    "TS",
    "UPSERT",
    "VERSION_FIELD",
    "BadPart",
    "Change",
    "DeadLetter",
    "EntryError",
    "Marker",
    "decode_dead_letter",
    "decode_entry",
    "decode_entry_parts",
    "encode_changes",
    "encode_dead_letter",
    "encode_progress",
    "encode_reconcile",
    "raw_fields_json",
]

# Every document carries its version (the ts it was written at) in this field, so
# a search can find documents older than a reconcile snapshot (consumer.reconcile).
VERSION_FIELD: Final = "sync_version"

# Field names of an entry (and of a dead letter: TS, OP, KEY, DOC).
TS: Final = b"ts"
OP: Final = b"op"
KEY: Final = b"key"
DOC: Final = b"doc"
COUNT: Final = b"n"  # changes in a b entry

# The most changes the producer puts in one ``b`` entry (its entries are also capped
# at MAX_ENTRY_BYTES). A consumer sizes its first read by it: XREADGROUP counts
# entries, MAX_BATCH_SIZE changes (consumer.batch.entries_to_read).
MAX_CHANGES_PER_ENTRY: Final = 256

UPSERT: Final = b"u"
DELETE: Final = b"d"
BATCH: Final = b"b"
PROGRESS: Final = b"p"
RECONCILE: Final = b"r"
# What each op is called in logs and in `searchsync dlq list`.
OP_NAMES: Final = {
    UPSERT: "upsert",
    DELETE: "delete",
    BATCH: "batch",
    PROGRESS: "progress",
    RECONCILE: "reconcile",
}

Fields = dict[bytes, bytes]


class EntryError(ValueError):
    """An entry that is not in the format above (a poison entry)."""


class Change(msgspec.Struct, frozen=True, array_like=True):
    """One consolidated change of one key at one timestamp. ``doc`` None = delete."""

    ts: int
    key: bytes
    doc: bytes | None

    @property
    def op(self) -> bytes:
        return DELETE if self.doc is None else UPSERT


class Marker(msgspec.Struct, frozen=True, array_like=True):
    """A progress (``p``) or reconcile (``r``) entry."""

    op: bytes
    ts: int


def encode_changes(ts: int, changes: Sequence[tuple[bytes, bytes | None]]) -> Fields:
    """Fields of one entry holding ``changes`` (key, doc-or-None) at ``ts``.

    One change gives a plain ``u``/``d`` entry, several give a ``b`` entry.
    Keys must be distinct: consolidation leaves at most one change per key and ts.
    """
    if not changes:
        raise ValueError("an entry needs at least one change")
    ts_bytes = str(ts).encode()
    if len(changes) == 1:
        key, doc = changes[0]
        if doc is None:
            return {TS: ts_bytes, OP: DELETE, KEY: key}
        return {TS: ts_bytes, OP: UPSERT, KEY: key, DOC: doc}
    if len({key for key, _ in changes}) != len(changes):
        raise ValueError("keys of one batch entry must be distinct")
    fields: Fields = {TS: ts_bytes, OP: BATCH, COUNT: str(len(changes)).encode()}
    for key, doc in changes:
        if doc is None:
            fields[DELETE + b":" + key] = b""
        else:
            fields[UPSERT + b":" + key] = doc
    return fields


def encode_progress(ts: int) -> Fields:
    return {TS: str(ts).encode(), OP: PROGRESS}


def encode_reconcile(ts: int) -> Fields:
    return {TS: str(ts).encode(), OP: RECONCILE}


def _ts(fields: Mapping[bytes, bytes]) -> int:
    raw = fields.get(TS)
    if raw is None:
        raise EntryError("entry has no ts field")
    try:
        return int(raw)
    except ValueError:
        raise EntryError(f"entry ts is not an integer: {raw!r}") from None


def decode_entry(fields: Mapping[bytes, bytes]) -> list[Change] | Marker:
    """The changes of a data entry, or the :class:`Marker` of a ``p``/``r`` entry.

    Raises :class:`EntryError` for anything malformed, so the caller can
    dead-letter it instead of stalling the partition.
    """
    ts = _ts(fields)
    op = fields.get(OP)
    if op in (UPSERT, DELETE):
        key = fields.get(KEY)
        if not key:
            raise EntryError("entry has no key")
        if op == DELETE:
            return [Change(ts, key, None)]
        doc = fields.get(DOC)
        if doc is None:
            raise EntryError("upsert entry has no doc")
        return [Change(ts, key, doc)]
    if op == BATCH:
        return _decode_batch(ts, fields)
    if op in (PROGRESS, RECONCILE):
        return Marker(op, ts)
    raise EntryError(f"unknown op {op!r}")


class BadPart(msgspec.Struct, frozen=True):
    """One field of a ``b`` entry that is not a change: ``key`` as well as it can be told."""

    key: bytes
    value: bytes
    reason: str


def decode_entry_parts(
    fields: Mapping[bytes, bytes],
) -> tuple[list[Change] | Marker, list[BadPart]]:
    """:func:`decode_entry`, except that a ``b`` entry with some bad fields still yields
    its good changes, and each bad field comes back as a :class:`BadPart`.

    A consumer dead-letters each bad part on its own and applies the rest: one
    malformed change must not cost the up to 255 others of its entry. A wrong ``n``
    alone is no reason to drop anything (the changes are all there); it is
    ignored. Raises :class:`EntryError` for what cannot be split: no readable
    ``ts``, an unknown ``op``, a ``u``/``d`` entry without its key or document.
    """
    ts = _ts(fields)
    if fields.get(OP) != BATCH:
        return decode_entry(fields), []
    changes: list[Change] = []
    bad: list[BadPart] = []
    for name, value in fields.items():
        if name in (TS, OP, COUNT):
            continue
        kind, sep, key = name.partition(b":")
        if sep and key and kind == UPSERT:
            if value:
                changes.append(Change(ts, key, value))
            else:
                bad.append(BadPart(key, value, f"batch field {name!r} holds no document"))
        elif sep and key and kind == DELETE:
            changes.append(Change(ts, key, None))
        else:  # the whole field name is kept: it is all there is to rebuild the change from
            shown = b"" if sep and not key else name
            bad.append(BadPart(shown, value, f"batch field {name!r} is not u:<key> or d:<key>"))
    return changes, bad


def raw_fields_json(fields: Mapping[bytes, bytes]) -> bytes:
    """An entry's fields as one JSON object (bytes shown as text, undecodable bytes
    escaped): what a dead letter of an unreadable entry keeps, so it can be rebuilt."""
    return msgspec.json.encode(
        {
            name.decode(errors="backslashreplace"): value.decode(errors="backslashreplace")
            for name, value in fields.items()
        }
    )


def _decode_batch(ts: int, fields: Mapping[bytes, bytes]) -> list[Change]:
    changes: list[Change] = []
    for name, value in fields.items():
        if name in (TS, OP, COUNT):
            continue
        kind, sep, key = name.partition(b":")
        if not sep or not key:
            raise EntryError(f"batch field {name!r} is not u:<key> or d:<key>")
        if kind == UPSERT:
            changes.append(Change(ts, key, value))
        elif kind == DELETE:
            changes.append(Change(ts, key, None))
        else:
            raise EntryError(f"batch field {name!r} is not u:<key> or d:<key>")
    declared = fields.get(COUNT)
    if declared is None or declared != str(len(changes)).encode():
        raise EntryError(f"batch declares n={declared!r} but holds {len(changes)} changes")
    return changes


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One change that will not be retried on its own, and why.

    ``source`` says where it came from: ``p<N>/<entry id>`` for a consumer
    rejection, ``producer`` for what the producer refused: a key violation (then
    ``doc`` holds a JSON array of the violating rows it knows), a key the codec
    cannot carry (``doc``: the row's document), a document over MAX_DOCUMENT_BYTES
    (no ``doc``). ``deliveries`` is how often the entry had been attempted when it
    was given up (consumer.attempts; the field keeps its old name for readers).
    """

    ts: int
    op: bytes
    key: bytes
    reason: str
    source: str
    doc: bytes | None = None
    deliveries: int = 0


def encode_dead_letter(letter: DeadLetter) -> Fields:
    fields: Fields = {
        TS: str(letter.ts).encode(),
        OP: letter.op,
        KEY: letter.key,
        b"reason": letter.reason.encode(),
        b"source": letter.source.encode(),
        b"deliveries": str(letter.deliveries).encode(),
    }
    if letter.doc is not None:
        fields[DOC] = letter.doc
    return fields


def decode_dead_letter(fields: Mapping[bytes, bytes]) -> DeadLetter:
    try:
        return DeadLetter(
            ts=_ts(fields),
            op=fields[OP],
            key=fields[KEY],
            reason=fields[b"reason"].decode(errors="replace"),
            source=fields[b"source"].decode(errors="replace"),
            doc=fields.get(DOC),
            deliveries=int(fields.get(b"deliveries", b"0")),
        )
    except (KeyError, ValueError) as error:
        raise EntryError(f"malformed dead letter: {error}") from None
