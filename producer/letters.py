"""The dead letters the producer writes, built in one place for both readers.

The SUBSCRIBE session (producer.session) and the polling fallback
(producer.polling) refuse the same things — a key with several live rows (a key
violation), a document over MAX_DOCUMENT_BYTES, a row the codec cannot carry — and
each refusal is one :class:`~searchsync.common.entries.DeadLetter` with
``source="producer"`` and one ERROR line, worded the same whichever mode found it.
No I/O besides the log line; the caller writes the letters (producer.writer).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from ..common.entries import DELETE, UPSERT, DeadLetter
from .consolidate import Consolidated, violation_reason
from .rows import FIRST_VALUE, Rejected

if TYPE_CHECKING:
    from .documents import DocumentEncoder

__all__ = ["dead_letters_for", "key_violation", "oversize", "violation_reason"]

log = logging.getLogger("searchsync.producer.letters")

SOURCE = "producer"

_encode_row = msgspec.json.Encoder(enc_hook=str).encode


def key_violation(
    view: str, ts: int, key: str, *, rows: int, reason: str, doc: bytes
) -> DeadLetter:
    """The dead letter of a key violation, logged at ERROR. ``rows`` is how many live
    rows ``doc`` (a JSON array of their documents) holds; the indexed document stays."""
    log.error(
        "Key violation in %s at ts=%d: key %s has %d live rows; sent to the dead-letter stream",
        view,
        ts,
        key,
        rows,
    )
    return DeadLetter(ts=ts, op=UPSERT, key=key.encode(), reason=reason, source=SOURCE, doc=doc)


def oversize(ts: int, key: str, size: int, limit: int) -> DeadLetter:
    """The dead letter of a document OpenSearch would refuse (above MAX_DOCUMENT_BYTES
    = ``limit``), logged at ERROR: its key and size without the document, which would
    weigh as much in Redis; it is the view's row, to be re-read once the limit or the
    row changes."""
    log.error(
        "Document of key %s at ts=%d is %d bytes, more than MAX_DOCUMENT_BYTES=%d; "
        "sent to the dead-letter stream",
        key,
        ts,
        size,
        limit,
    )
    return DeadLetter(
        ts=ts,
        op=UPSERT,
        key=key.encode(),
        reason=f"document is {size} bytes, more than MAX_DOCUMENT_BYTES={limit}",
        source=SOURCE,
    )


def dead_letters_for(
    view: str, out: Consolidated, rejected: list[Rejected], encoder: DocumentEncoder
) -> list[DeadLetter]:
    """Dead letters for the key violations of ``out`` and the rows that were rejected.

    A row rejected for its key keeps the key (as well as it can be written) and its
    document as it would have been indexed, so it can be retried once the key is
    fixed in the view; any other rejected row keeps the whole row.
    """
    letters = [
        key_violation(
            view,
            violation.ts,
            violation.key,
            rows=len(violation.rows),
            reason=violation.reason,
            doc=encoder.encode_array(violation.rows, violation.ts),
        )
        for violation in out.violations
    ]
    for row in rejected:
        log.error("Error processing SUBSCRIBE row for %s: %s", view, row.reason)
        if row.key is not None:
            diff = row.row[2]
            letters.append(
                DeadLetter(
                    ts=row.ts,
                    op=DELETE if isinstance(diff, int) and diff < 0 else UPSERT,
                    key=row.key.encode(errors="backslashreplace"),
                    reason=row.reason,
                    source=SOURCE,
                    doc=encoder.encode(row.row[FIRST_VALUE:], row.ts),
                )
            )
        else:
            letters.append(
                DeadLetter(
                    ts=row.ts,
                    op=UPSERT,
                    key=b"",
                    reason=row.reason,
                    source=SOURCE,
                    doc=_encode_row(row.row),
                )
            )
    return letters
