"""PostgreSQL COMMIT → searchable, the latency users feel, and → retrievable by id.

Shared by the demo (devstack/demo.py) and bench.e2e.

The load generator records every change it commits (``--record``: order ids,
``sent_ts`` before the statement, ``commit_ts`` after COMMIT, whether it deleted).
:class:`Tracker` follows that file as it grows and polls OpenSearch every
``interval`` seconds for the changes it tracks: ``_search`` (an ``ids`` query; it
sees only what a refresh has published, as users' searches do) and ``mget`` (real
time: a document is retrievable by id before any refresh). A change is reached
when every order it touched shows a ``sync_version`` at or above its ``sent_ts``
(the Materialize timestamp of a change is never below the time it was sent), or is
gone for a delete. Latency = the poll that saw it − ``commit_ts``, so it is an upper
bound by at most one poll interval.

At thousands of changes a second polling every change would load OpenSearch more
than the pipeline does, so every ``sample``-th change is tracked (chosen by its
place in the file, before anything is known of its latency).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import AsyncOpenSearch

__all__ = ["Tracked", "Tracker", "reached"]


def reached(versions: dict[str, int], order_ids: list[str], sent_ts: float, deleted: bool) -> bool:
    """Whether ``versions`` (id → sync_version) shows the change sent at ``sent_ts``."""
    sent_ms = sent_ts * 1000
    if deleted:
        return not any(oid in versions for oid in order_ids)
    return all(versions.get(oid, -1) >= sent_ms for oid in order_ids)


@dataclass(slots=True)
class Tracked:
    kind: str
    order_ids: list[str]
    sent_ts: float
    commit_ts: float
    deleted: bool
    retrievable_s: float | None = None
    # a later change of one of its orders was committed before it was seen: the
    # sync_version a search shows may be that change's timestamp, not this one's
    superseded: bool = False


@dataclass
class Tracker:
    """Follows the load's record file; :meth:`poll` once per interval."""

    search: AsyncOpenSearch
    index: str
    record: Path
    sample: int = 1
    # changes sent before this (epoch s) are read but not measured (warm-up)
    measure_from: float = 0.0
    pending: dict[int, Tracked] = field(default_factory=dict)
    searchable: list[float] = field(default_factory=list)
    retrievable: list[float] = field(default_factory=list)
    committed: list[float] = field(default_factory=list)  # commit_ts of every change
    # the searchable latency split at the change's Materialize timestamp (its
    # sync_version), for changes no later change of their orders could hide
    commit_to_ts: list[float] = field(default_factory=list)
    ts_to_searchable: list[float] = field(default_factory=list)
    _watch: dict[str, list[int]] = field(default_factory=dict)  # order id → pending seqs
    _offset: int = 0
    _seq: int = 0

    def read_new(self) -> None:
        """Take the lines appended to the record since the last call."""
        try:
            with self.record.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            self._take(json.loads(line))

    def _take(self, change: dict[str, Any]) -> None:
        self.committed.append(change["commit_ts"])
        for oid in change["order_ids"]:
            for seq in self._watch.get(oid, ()):
                self.pending[seq].superseded = True
        if change["deleted"]:  # the earlier changes of a deleted order can never be seen
            gone = set(change["order_ids"])
            for seq in [s for s, t in self.pending.items() if gone & set(t.order_ids)]:
                self._unwatch(seq, self.pending.pop(seq))
        self._seq += 1
        if self._seq % self.sample or change["sent_ts"] < self.measure_from:
            return
        self.pending[self._seq] = Tracked(
            change["kind"], change["order_ids"], change["sent_ts"], change["commit_ts"],
            change["deleted"],
        )  # fmt: skip
        for oid in change["order_ids"]:
            self._watch.setdefault(oid, []).append(self._seq)

    def unseen(self) -> list[str]:
        """The changes still pending, in words."""
        return [
            f"{t.kind} of {', '.join(t.order_ids)} sent at {t.sent_ts:.3f}"
            for t in self.pending.values()
        ]

    async def poll(self) -> None:
        """One ``_search`` and one ``mget`` for every order of a pending change."""
        self.read_new()
        if not self.pending:
            return
        ids = sorted({oid for tracked in self.pending.values() for oid in tracked.order_ids})
        by_id, searched = await self._versions(ids)
        self.settle(by_id, searched, time.time())

    def settle(self, by_id: dict[str, int], searched: dict[str, int], seen: float) -> None:
        """What one poll saw at ``seen`` (id → sync_version by ``mget`` and ``_search``)."""
        for seq, tracked in list(self.pending.items()):
            hit = reached(searched, tracked.order_ids, tracked.sent_ts, tracked.deleted)
            if tracked.retrievable_s is None and (
                hit or reached(by_id, tracked.order_ids, tracked.sent_ts, tracked.deleted)
            ):
                tracked.retrievable_s = seen - tracked.commit_ts
                self.retrievable.append(tracked.retrievable_s)
            if hit:
                self.searchable.append(seen - tracked.commit_ts)
                del self.pending[seq]
                self._unwatch(seq, tracked)
                if not (tracked.deleted or tracked.superseded):
                    ts = searched[tracked.order_ids[0]] / 1000
                    self.commit_to_ts.append(ts - tracked.commit_ts)
                    self.ts_to_searchable.append(seen - ts)

    def _unwatch(self, seq: int, tracked: Tracked) -> None:
        for oid in tracked.order_ids:
            seqs = self._watch.get(oid)
            if seqs is not None and seq in seqs:
                seqs.remove(seq)
                if not seqs:
                    del self._watch[oid]

    async def _versions(self, ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        docs = (
            await self.search.mget(
                index=self.index, body={"ids": ids}, params={"_source_includes": "sync_version"}
            )
        )["docs"]
        query = {"size": len(ids), "query": {"ids": {"values": ids}}, "_source": ["sync_version"]}
        hits = (await self.search.search(index=self.index, body=query))["hits"]["hits"]
        return (
            {d["_id"]: d["_source"]["sync_version"] for d in docs if d.get("found")},
            {h["_id"]: h["_source"]["sync_version"] for h in hits},
        )
