"""``searchsync dlq``: dead letters in words, and what a retry does with each.

Pure, no I/O (cli.dlq reads and writes Redis and Materialize). A letter is an
entry of ``searchsync:{<view>}:dlq`` (common.entries.DeadLetter); its entry id says
when it was dead-lettered, its ``ts`` which change it held.

A retry never resends the letter's document, which may be days old: it re-reads
the key's rows from the view at a Materialize timestamp T and decides
(:func:`decide`): one live row → an upsert at T, none → a delete at T (the key
is gone from the view), several → the key still breaks the view's key (the
letter stays), a document over MAX_DOCUMENT_BYTES → the letter stays. Since T is
the version, a change newer than T that the pipeline writes anyway wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple

import msgspec

from .entries import (
    DELETE,
    KEY,
    OP,
    OP_NAMES,
    UPSERT,
    DeadLetter,
    EntryError,
    decode_dead_letter,
    raw_fields_json,
)
from .partition import partition_of

__all__ = [
    "LIST_ORDER",
    "Decision",
    "LetterRow",
    "Outcome",
    "decide",
    "entry_time",
    "id_after",
    "letter_partition",
    "letter_row",
    "parse_before",
    "parse_entry_id",
    "read_letter",
    "render_letter",
    "render_table",
    "shown_document",
    "unretryable",
]

LIST_ORDER: Final = "newest first"
_ID = re.compile(r"(\d+)(?:-(\d+))?")
_SOURCE = re.compile(r"p(\d+)/")
_REASON_WIDTH: Final = 70


class LetterRow(msgspec.Struct, frozen=True):
    """One letter as ``dlq list`` and ``dlq show`` print it (bytes as safe text)."""

    id: str
    time: str  # when it was dead-lettered (its entry id), ISO 8601 UTC
    partition: int | None  # the key's partition (None: a letter without a key)
    ts: int  # the Materialize timestamp of the change it held
    op: str
    key: str
    source: str  # p<N>/<entry id> (a consumer rejected it) or producer
    reason: str
    deliveries: int
    doc_bytes: int | None  # None: the letter keeps no document


def _text(raw: bytes) -> str:
    return raw.decode(errors="backslashreplace")


def parse_entry_id(text: str) -> tuple[int, int]:
    """``"1733320000000-3"`` → ``(1733320000000, 3)``; ``"1733320000000"`` → ``(…, 0)``.

    Raises ValueError for anything else.
    """
    match = _ID.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a stream entry id (like 1733320000000-0)")
    return int(match.group(1)), int(match.group(2) or 0)


def entry_time(entry_id: str) -> str:
    """When an entry was added, from its id: ISO 8601 UTC with milliseconds."""
    ms, _ = parse_entry_id(entry_id)
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_before(text: str) -> tuple[int, int]:
    """``purge --before T``: the first entry id NOT purged, from an entry id or an ISO time
    (a time without offset is UTC). Raises ValueError naming both forms."""
    try:
        return parse_entry_id(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--before {text!r} is neither an ISO time (2026-12-04T15:00:00Z) "
            "nor an entry id (1733320000000-0)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000), 0


def id_after(entry_id: tuple[int, int]) -> tuple[int, int]:
    """The smallest id above ``entry_id`` (XTRIM MINID of it keeps ``entry_id`` out)."""
    return entry_id[0], entry_id[1] + 1


def letter_partition(letter: DeadLetter, partitions: int) -> int | None:
    """The partition of the letter's key; for a keyless letter, the one it came from."""
    if letter.key:
        return partition_of(letter.key, partitions)
    match = _SOURCE.match(letter.source)
    return int(match.group(1)) if match else None


def letter_row(entry_id: str, letter: DeadLetter, partitions: int) -> LetterRow:
    return LetterRow(
        id=entry_id,
        time=entry_time(entry_id),
        partition=letter_partition(letter, partitions),
        ts=letter.ts,
        op=OP_NAMES.get(letter.op, _text(letter.op) or "?"),
        key=_text(letter.key),
        source=letter.source,
        reason=letter.reason,
        deliveries=letter.deliveries,
        doc_bytes=None if letter.doc is None else len(letter.doc),
    )


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(dlq: str, rows: Sequence[LetterRow], total: int) -> list[str]:
    """``dlq list``: a header with the total, then one line per letter."""
    if total == 0:
        return [f"{dlq}: no dead letters"]
    shown = f"the newest {len(rows)}, " if len(rows) < total else ""
    lines = [
        f"{dlq}: {total} dead letter{'s' if total != 1 else ''} ({shown}{LIST_ORDER})",
        f"{'id':<17} {'time (UTC)':<24} {'part':<5} {'ts':<14} {'key':<24} reason",
    ]
    for row in rows:
        part = "-" if row.partition is None else f"p{row.partition}"
        key = row.key if row.key else "-"
        lines.append(
            f"{row.id:<17} {row.time:<24} {part:<5} {row.ts:<14} {key:<24} "
            f"{_cut(row.reason, _REASON_WIDTH)}"
        )
    return lines


def shown_document(doc: bytes | None) -> tuple[str, Any]:
    """How a letter's document is shown: ``("json", msgspec.Raw)`` when it is JSON (its
    bytes embedded as they are in a JSON answer), else ``("text", str)`` with bytes that
    are not UTF-8 escaped (``\\xff``), or ``("none", None)`` when the letter keeps none."""
    if doc is None:
        return "none", None
    try:  # strict JSON (no NaN) in UTF-8: msgspec.json.format does not check the latter
        msgspec.json.decode(doc)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return "text", _text(doc)
    return "json", msgspec.Raw(doc)


def render_letter(row: LetterRow, doc: bytes | None) -> list[str]:
    """``dlq show``: every field, the document pretty-printed if it is JSON."""
    part = "-" if row.partition is None else f"p{row.partition}"
    lines = [
        f"id          {row.id}",
        f"time        {row.time} (when it was dead-lettered)",
        f"key         {row.key or '-'}",
        f"partition   {part}",
        f"ts          {row.ts} (Materialize timestamp of the change)",
        f"op          {row.op}",
        f"source      {row.source}",
        f"deliveries  {row.deliveries}",
        f"reason      {row.reason}",
    ]
    kind, value = shown_document(doc)
    if kind == "none":
        lines.append("document    (none kept)")
    elif kind == "json":
        lines.append(f"document    JSON, {row.doc_bytes} bytes:")
        # reindented, not re-encoded: numbers and escapes stay as the bytes have them
        lines.extend(msgspec.json.format(doc or b"", indent=2).decode().splitlines())
    else:
        lines.append(f"document    not JSON, {row.doc_bytes} bytes (non-UTF-8 bytes escaped):")
        lines.append(value)
    return lines


class Outcome(StrEnum):
    """What ``dlq retry`` did with a letter."""

    RETRIED = "retried"  # its key's current row appended as an upsert; letter deleted
    GONE_FROM_VIEW = "gone_from_view"  # the key has no row now: a delete appended; deleted
    STILL_BAD = "still_bad"  # the current row cannot be written either; letter kept
    NOT_RETRYABLE = "not_retryable"  # no key to re-read (a marker, a garbled entry); kept
    VIEW_BEHIND = "view_behind"  # the view was read before the letter's ts; kept
    NOT_FOUND = "not_found"  # no such letter (deleted meanwhile, or a wrong id)
    NOT_CONFIRMED = "not_confirmed"  # the operator did not confirm: nothing was done

    @property
    def removes_letter(self) -> bool:
        return self in (Outcome.RETRIED, Outcome.GONE_FROM_VIEW)


class Decision(NamedTuple):
    """A retry's outcome for one key; ``op``/``doc`` is the change to append (op None: none)."""

    outcome: Outcome
    detail: str
    op: bytes | None = None
    doc: bytes | None = None


def unretryable(letter: DeadLetter, key_problem: Callable[[str], str | None]) -> str | None:
    """Why ``letter`` has no key whose row could be re-read, or None.

    ``key_problem`` tells why a key cannot be a stream entry's key (producer.rows).
    """
    if letter.op not in (UPSERT, DELETE):
        op = OP_NAMES.get(letter.op, repr(letter.op))
        return f"a {op} entry, not one key's change: nothing to re-read (purge it)"
    try:
        key = letter.key.decode()
    except UnicodeDecodeError:
        return "its key is not UTF-8: no view row can have it"
    if "\x00" in key:
        return "its key holds a NUL character: no view row can have it"
    problem = key_problem(key)
    if problem is not None:
        return f"its key {problem}: it cannot be written (fix the view's row)"
    return None


def decide(
    *, letter_ts: int, docs: Sequence[bytes], read_ts: int, max_document_bytes: int
) -> Decision:
    """What to write for a key whose newest letter has ``letter_ts``, given its live rows'
    documents ``docs`` read at ``read_ts``."""
    if read_ts < letter_ts:
        return Decision(
            Outcome.VIEW_BEHIND,
            f"the view was read at ts {read_ts}, before the letter's ts {letter_ts}: retry again",
        )
    if len(docs) > 1:
        return Decision(
            Outcome.STILL_BAD,
            f"key violation: {len(docs)} live rows for the key at ts {read_ts}",
        )
    if not docs:
        return Decision(
            Outcome.GONE_FROM_VIEW, f"no row at ts {read_ts}: delete appended", DELETE, None
        )
    (doc,) = docs
    if len(doc) > max_document_bytes:
        return Decision(
            Outcome.STILL_BAD,
            f"document is {len(doc)} bytes, more than MAX_DOCUMENT_BYTES={max_document_bytes}",
        )
    return Decision(
        Outcome.RETRIED, f"current row appended as an upsert at ts {read_ts}", UPSERT, doc
    )


def read_letter(fields: dict[bytes, bytes]) -> DeadLetter:
    """The letter in ``fields``; one that is not a letter (written by hand) is shown as
    such, with its raw fields as its document, rather than hidden."""
    try:
        return decode_dead_letter(fields)
    except EntryError as error:
        return DeadLetter(
            ts=0,
            op=fields.get(OP, b""),
            key=fields.get(KEY, b""),
            reason=f"unreadable letter: {error}",
            source="?",
            doc=raw_fields_json(fields),
        )
