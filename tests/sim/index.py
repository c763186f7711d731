"""An in-memory model of the OpenSearch index behind the alias, as the consumers use it.

Modelled: ``_id`` = key, external versions with ``version_type=external_gte`` (a
write below the stored version is a 409 ``version_conflict_engine_exception``,
an equal one is accepted), deletes leave a tombstone carrying their version
(a delete of a missing document answers 404 with no error type and still
records it), tombstones forgotten after ``gc_deletes`` seconds (OpenSearch's
``index.gc_deletes``, 60 s by default: after that an older write is accepted
again), and a document OpenSearch cannot map (:data:`POISON_DOC`: an object where
the mapping has a long) refused with 400 ``mapper_parsing_exception``.
tests/integration/test_sim_contract.py runs the same checks against the real node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from searchsync.common.entries import Change
from searchsync.consumer.bulk import ItemResult

__all__ = ["POISON_DOC", "Doc", "IndexModel"]

# A document the model refuses as a mapping error (a planted poison change).
POISON_DOC = b'{"sync_version":{"not":"a number"}}'

CONFLICT = ItemResult(409, "version_conflict_engine_exception", "version conflict")
UNMAPPABLE = ItemResult(400, "mapper_parsing_exception", "failed to parse field [sync_version]")


@dataclass(slots=True)
class Doc:
    version: int
    source: bytes | None  # None: a tombstone
    deleted_at: float = 0.0


class IndexModel:
    """The documents of one index; ``now`` is seconds on the simulated clock."""

    def __init__(self, now: Callable[[], float], gc_deletes: float = 60.0) -> None:
        self.now = now
        self.gc_deletes = gc_deletes
        self.docs: dict[bytes, Doc] = {}

    def current(self, key: bytes) -> Doc | None:
        """The stored document or tombstone (a tombstone past gc_deletes is forgotten)."""
        doc = self.docs.get(key)
        if doc is not None and doc.source is None and self.now() - doc.deleted_at > self.gc_deletes:
            del self.docs[key]
            return None
        return doc

    def write(self, change: Change) -> ItemResult:
        """One bulk action (index or delete) at ``version = change.ts``, external_gte."""
        stored = self.current(change.key)
        if stored is not None and change.ts < stored.version:
            return CONFLICT
        if change.doc is None:
            existed = stored is not None and stored.source is not None
            self.docs[change.key] = Doc(change.ts, None, self.now())
            return ItemResult(200) if existed else ItemResult(404)
        if change.doc == POISON_DOC:
            return UNMAPPABLE
        self.docs[change.key] = Doc(change.ts, change.doc)
        return ItemResult(201 if stored is None or stored.source is None else 200)

    def live(self) -> dict[bytes, bytes]:
        """key → document of every document that is not a tombstone."""
        return {k: d.source for k, d in self.docs.items() if d.source is not None}
