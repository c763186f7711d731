"""An in-memory model of the OpenSearch index behind the alias, as the consumers use it.

Modelled: ``_id`` = key, external versions with ``version_type=external_gte`` (a
write below the stored version is a 409 ``version_conflict_engine_exception``,
an equal one is accepted), deletes leave a tombstone carrying their version
(a delete of a missing document answers 404 with no error type and still
records it), tombstones forgotten after ``gc_deletes`` seconds (OpenSearch's
``index.gc_deletes``, 60 s by default: after that an older write is accepted
again), the reconcile's deletes (consumer.reconcile: every live document below
the snapshot's T deleted at version T, external, so its tombstone refuses any write
below T until gc_deletes), and a document OpenSearch cannot map (:data:`POISON_DOC`: text that is no
number in ``order_total_amount``, a float in the mapping) refused with 400
``mapper_parsing_exception``. The index's ``gc_deletes`` is what searchsync creates
its indexes with (common.index.index_body: STREAM_RETENTION_SECONDS), not
OpenSearch's default of 60 s: :func:`gc_deletes_of`.
tests/integration/test_sim_contract.py runs the same checks against the real node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from searchsync.common.config import Settings
from searchsync.common.entries import Change
from searchsync.common.index import index_body
from searchsync.consumer.bulk import ItemResult

__all__ = [
    "NOT_A_NUMBER",
    "OPENSEARCH_GC_DELETES",
    "POISON_DOC",
    "Doc",
    "IndexModel",
    "gc_deletes_of",
]

# The value of a planted poison row: the mapping has a float there (a mapping error).
NOT_A_NUMBER = "not a number"
_UNMAPPABLE = b'"order_total_amount":"%s"' % NOT_A_NUMBER.encode()
# A document the index refuses as a mapping error (a planted poison change).
POISON_DOC = b'{"order_id":"bad",%s,"sync_version":1}' % _UNMAPPABLE
# index.gc_deletes of an index created without it (by hand, or adopted)
OPENSEARCH_GC_DELETES = 60.0


def gc_deletes_of(settings: Settings) -> float:
    """Seconds of ``index.gc_deletes`` in the settings searchsync creates indexes with."""
    text = index_body(retention_seconds=settings.stream_retention_seconds)["settings"]["index"]
    value = str(text.get("gc_deletes", f"{OPENSEARCH_GC_DELETES:.0f}s"))
    if not value.endswith("s") or value.endswith("ms"):
        raise ValueError(f"gc_deletes {value!r}: expected whole seconds")
    return float(value[:-1])


CONFLICT = ItemResult(409, "version_conflict_engine_exception", "version conflict")
UNMAPPABLE = ItemResult(400, "mapper_parsing_exception", "failed to parse field [sync_version]")


@dataclass(slots=True)
class Doc:
    version: int
    source: bytes | None  # None: a tombstone
    deleted_at: float = 0.0


class IndexModel:
    """The documents of one index; ``now`` is seconds on the simulated clock."""

    def __init__(self, now: Callable[[], float], gc_deletes: float = OPENSEARCH_GC_DELETES) -> None:
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
        if _UNMAPPABLE in change.doc:
            return UNMAPPABLE
        self.docs[change.key] = Doc(change.ts, change.doc)
        return ItemResult(201 if stored is None or stored.source is None else 200)

    def delete_older_than(self, ts: int) -> list[tuple[bytes, int]]:
        """The reconcile's deletes (consumer.reconcile): every live document below ``ts``
        is deleted at version ``ts`` (``version_type=external``), so its tombstone refuses
        every write below ``ts`` until gc_deletes; a tombstone already there is not
        searched, so it keeps its version. The (key, version) deleted."""
        deleted = []
        for key, doc in list(self.docs.items()):
            if doc.source is not None and doc.version < ts:
                self.docs[key] = Doc(ts, None, self.now())
                deleted.append((key, doc.version))
        return deleted

    def live(self) -> dict[bytes, bytes]:
        """key → document of every document that is not a tombstone."""
        return {k: d.source for k, d in self.docs.items() if d.source is not None}
