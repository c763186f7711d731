"""USE_SUBSCRIBE=false: poll the view every POLL_INTERVAL seconds (runbook "Rollback to Polling").

Changes are found by content. One poll is one Materialize read transaction::

    BEGIN; SELECT 1 FROM <view> LIMIT 1;       -- fixes the time domain (below)
    SELECT mz_now()::text;                     -- T, the poll's own timestamp
    SELECT * FROM <view>;                      -- every row, streamed
    SELECT * FROM <view> WHERE <key> IN (…);   -- only keys read twice (below)
    COMMIT

Materialize fixes a read transaction's time domain (the objects it may read)
and its timestamp with its first query: the objects that query references and
every object in their schemas. ``SELECT mz_now()`` references none, so were it
first the view would be outside the domain and its read refused; a one-row read
of the view goes first, and ``mz_now()`` then returns the transaction's timestamp.

Every key gets a 64-bit digest of its row: BLAKE2b (8 bytes) of the row's
document encoded at version 0, so the version never changes a digest, and any
column of the view does — an order line's quantity (``order_total_amount``), a
deleted task (the task columns go null), a customer's address copied into each
of the customer's orders — whether or not ``effective_updated_at`` moved. Keys
whose digest is new or changed since the previous poll become upserts (their
document encoded again, at V), keys that disappeared become deletes, all at
version V = max(T, checkpoint): Materialize timestamps are what SUBSCRIBE stamps
its changes with, so a poll's versions never fall behind what SUBSCRIBE wrote and
never overtake what it will write for later changes. A key read more than once is
a key violation: its rows are read again by key (same transaction) and it gets
the digest of its sorted documents; it is dead-lettered when that digest is new,
and nothing is written for it (the index keeps the last good document); once the
key is back to one row, that row's digest differs and it is upserted. An
unchanged key costs one encode and one hash per poll and writes nothing.

The digests of the previous poll are kept in memory (``dict`` key → ``int``) and
mirrored in the hash ``searchsync:<view>:poll:digests`` (field = key, value = the
8 digest bytes, big-endian), so a restarted producer loads them (HSCAN) at its
first poll and writes only what changed while it was away. When the hash is
missing (first use; SUBSCRIBE mode does not keep it and deletes it when it starts,
as digests older than what SUBSCRIBE wrote would hide the deletion of a key
SUBSCRIBE created), or there is no checkpoint,
the first poll is a full write: every row upserted at V, then a reconcile marker
at V, so documents whose rows vanished while no digests were kept are deleted
once every partition has applied through V (producer.writer.mark_reconcile). The
hash is also missing when the view was empty at the last poll (Redis drops an
empty hash): a restart then writes the reconcile marker of an empty view, which
deletes nothing that should stay.

Order of writes (:func:`poll_steps`), after the read transaction:

1. ``invalidate``: HSET every key the poll touches (upserts, deletes, violations)
   to the empty value, "being written" (never equal to a digest);
2. ``write``: the entries (upserts, deletes) and dead letters, ``StreamWriter.write``,
   in round trips of at most :data:`_WRITE_CHANGES` changes;
3. ``remember``: HSET the new digests, HDEL the deleted keys (pipelined,
   :data:`_HASH_FIELDS` fields per command);
4. ``commit``: ``StreamWriter.commit(V + 1)``, so a later switch back to SUBSCRIBE
   resumes exactly after the poll; then the in-memory digests become this poll's.

A full poll is ``forget`` (UNLINK the hash), ``write``, ``reconcile`` (the marker),
``remember_at_once`` (step 3 in one script, all or nothing), ``commit``.

A crash between or inside any steps only replays, never skips. What makes it so:
a digest in the hash is always that of what was last written for its key (the
document in a stream, or the dead-lettered rows), because it is stored only after
the write and replaced by "being written" (step 1) before any other write of that
key; a key whose
last write is an upsert is always in the hash, or covered by a reconcile marker.
So after a crash in steps 1–3 the next poll (a new process, or the next session,
loading the hash) finds every touched key either "being written" — it is written
again, or deleted again if it is gone — or with its new digest, whose entries are
in the streams. Without step 1, a key written as B whose digest stayed A would be
missed when the row went back to A; a key deleted whose digest stayed would be
missed when it came back unchanged. A full poll writes no digest until its marker
is written and then all at once: while the hash is missing the next poll is full
again, and a document that vanished before the full poll is deleted by the marker
(storing half the digests would leave a key written at V, not older than the
marker, that no later poll deletes). A crash before ``commit`` leaves entries above
the checkpoint, as a SUBSCRIBE crash between ``write`` and ``commit`` does; the
next poll writes at a version ≥ this V (T and the checkpoint only grow), and
``external_gte`` makes a second copy harmless. Steps 1 and 3 are fenced by the
producer lease the session started under (producer.adapters.RedisDigestStore): a
producer paused past its lease would otherwise store digests over what its successors
wrote, or rebuild a hash a successor dropped, and hide a delete from the next poll.
tests/unit/producer/test_polling.py
kills a modelled producer at every write of every step; the simulator
(``python -m tests.sim --polling``, tests/sim/polling.py) runs this Poller on
modelled services, killed and cut inside its round trips and switched to
SUBSCRIBE and back.

Its services come through producer.ports (a poll source for the read
transaction, a digest store for the hash, the entry sink, the backpressure
gate); producer.adapters builds the real ones.

Memory: the digest dict holds a key's str, an int and the dict's slot and index;
a poll holds the previous and the new dict at once, so twice that at its peak,
plus the documents of the keys it writes: on a full poll every document, as the
SUBSCRIBE snapshot holds every row. Rows are streamed (psycopg chunked mode),
never all held. An unchanged row costs one encode, one BLAKE2b and dict lookups.
``python -m bench.polling`` measures bytes a key (in memory and in the Redis
hash) and CPU a row; the README's "Measured" table ("polling memory") has the
figures, and its Polling contract the bytes a key.

A digest collision (2⁻⁶⁴ per changed key) would hide one change until the row
changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from typing import Any, Final, Literal, NamedTuple, TypeVar

from ..common.config import Settings
from ..common.entries import DeadLetter
from .backpressure import wait_out
from .batches import build_entries
from .documents import DocumentEncoder
from .letters import key_violation, oversize, violation_reason
from .metrics import ProducerMetrics
from .ports import Backpressure, Columns, DigestStore, EntrySink, OpenPollSource, PollSource

__all__ = ["DIGEST_BYTES", "PollPlan", "Poller", "RowScan", "plan_poll", "poll_steps"]

log = logging.getLogger("searchsync.producer.polling")

DIGEST_BYTES: Final = 8
_blake2b = hashlib.blake2b  # looked up once, not per row
# Changes per StreamWriter.write round trip: a full poll of a large view is sent in
# pieces of a few MB instead of one pipeline of every document.
_WRITE_CHANGES: Final = 10_000
# What sets a key violation's digest apart from any one row's.
_SEVERAL: Final = b"several rows\x00"

T = TypeVar("T")


Encode = Callable[[Sequence[object], int], bytes]


class RowScan:
    """Pure fold of one poll's rows (no I/O): digests, changed documents, repeats.

    ``add`` takes each row (values in column order) in the order read. Its digest
    is BLAKE2b-64 of its document at version 0 (``encode(row, 0)``), so the version
    never changes a digest and everything else in the document does. A key seen
    twice goes to ``repeated``; its rows, read again, go to :meth:`settle`.
    ``digests`` (key → digest) is then the view's state for
    :func:`plan_poll`; ``docs`` holds the document at ``version`` of every
    single-row key whose digest differs from ``previous``, ``violations`` the
    documents of every key with several rows.
    """

    __slots__ = ("_encode", "_previous", "digests", "docs", "repeated", "version", "violations")

    def __init__(self, previous: Mapping[str, int], version: int, encode: Encode) -> None:
        self._previous = previous
        self._encode = encode
        self.version = version
        self.digests: dict[str, int] = {}
        self.docs: dict[str, bytes] = {}
        self.repeated: set[str] = set()
        self.violations: dict[str, list[bytes]] = {}

    def add(self, key: str, row: Sequence[object]) -> None:
        """One row of ``key``. Raises what ``encode`` raises."""
        digest = int.from_bytes(
            _blake2b(self._encode(row, 0), digest_size=DIGEST_BYTES).digest(), "big"
        )
        digests = self.digests
        if key in digests:
            self.repeated.add(key)
            self.docs.pop(key, None)
            return
        digests[key] = digest
        if self._previous.get(key) != digest:
            self.docs[key] = self._encode(row, self.version)

    def settle(self, key: str, rows: Sequence[Sequence[object]]) -> None:
        """The rows of ``key`` read again (all of them, maybe none by now): they
        replace whatever :meth:`add` recorded for it. Raises what ``encode`` raises."""
        self.repeated.discard(key)
        self.docs.pop(key, None)
        self.violations.pop(key, None)
        self.digests.pop(key, None)
        if len(rows) == 1:
            self.add(key, rows[0])
        elif rows:
            contents = sorted(self._encode(row, 0) for row in rows)
            joined = _SEVERAL + b"".join(b"%d:%b" % (len(c), c) for c in contents)
            self.digests[key] = int.from_bytes(
                _blake2b(joined, digest_size=DIGEST_BYTES).digest(), "big"
            )
            self.violations[key] = [self._encode(row, self.version) for row in rows]


class PollPlan(NamedTuple):
    """What one poll writes at ``version``: keys to upsert, delete and dead-letter."""

    version: int
    upserts: list[str]
    deletes: list[str]
    violations: list[str]


def plan_poll(
    version: int,
    previous: Mapping[str, int],
    current: Mapping[str, int],
    several: Set[str] = frozenset(),
) -> PollPlan:
    """Pure: one poll's changes from the previous poll's digests and this one's.

    A key of ``current`` whose digest is new or differs from ``previous`` is an
    upsert, or a violation (dead letter, nothing written) when it is in
    ``several`` (keys with several rows); a key of ``previous`` missing from
    ``current`` is a delete. Unchanged keys produce nothing. Lists are sorted.
    """
    upserts: list[str] = []
    violations: list[str] = []
    for key, digest in current.items():
        if previous.get(key) != digest:
            (violations if key in several else upserts).append(key)
    deletes = [key for key in previous if key not in current]
    upserts.sort()
    violations.sort()
    deletes.sort()
    return PollPlan(version, upserts, deletes, violations)


Step = Literal[
    "forget", "invalidate", "write", "reconcile", "remember", "remember_at_once", "commit"
]


def poll_steps(*, full: bool) -> tuple[Step, ...]:
    """Pure: the order of one poll's writes (module docstring, "Order of writes").

    ``forget``: UNLINK the digest hash; ``invalidate``: mark every key the poll
    touches as being written; ``write``: the entries and dead letters;
    ``reconcile``: the reconcile marker; ``remember``: HSET the new digests, HDEL
    deleted keys (``remember_at_once``: all in one script); ``commit``: the
    checkpoint V + 1.
    """
    if full:
        return ("forget", "write", "reconcile", "remember_at_once", "commit")
    return ("invalidate", "write", "remember", "commit")


class Poller:
    """Polls until stop (returns) or the first failure (raises).

    Its services come through producer.ports: ``open_source`` connects the poll
    source (producer.adapters.open_poll_source: Materialize), ``digests`` is the
    digest store (producer.adapters.RedisDigestStore), ``writer`` the entry sink
    (producer.writer.StreamWriter), ``monitor`` the backpressure gate.
    """

    def __init__(
        self,
        settings: Settings,
        writer: EntrySink,
        monitor: Backpressure,
        stop: asyncio.Event,
        *,
        open_source: OpenPollSource,
        digests: DigestStore,
        metrics: ProducerMetrics | None = None,
        on_streaming: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._monitor = monitor
        self._stop = stop
        self._open_source = open_source
        self._store = digests
        self._metrics = metrics if metrics is not None else ProducerMetrics.unserved()
        self._on_streaming = on_streaming
        self._view = settings.view_name
        # The previous poll's digests; None until the first poll of this Poller
        # loaded them (a Poller is built per session, so a failed poll reloads).
        self._digests: dict[str, int] | None = None
        self._encoder: tuple[list[str], list[Any], DocumentEncoder] | None = None
        # True once connected: from then the poller watches ``stop`` and finishes the
        # poll in hand (see producer.service._until_stopped)
        self.watching_stop = False

    async def run(self) -> None:
        """Poll every POLL_INTERVAL seconds until stop. Raises psycopg/redis errors."""
        source = await self._open_source(self._settings)
        log.info(
            "Connected to Materialize for polling %s every %gs (USE_SUBSCRIBE=false)",
            self._view,
            self._settings.poll_interval,
        )
        self.watching_stop = True
        try:
            while await wait_out(self._monitor, self._stop) == "resumed":
                await self.poll_once(source)
                if self._on_streaming is not None:
                    self._on_streaming()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._settings.poll_interval)
        finally:
            await source.close()

    async def poll_once(self, source: PollSource) -> PollPlan:
        """One poll, written to the streams, the digest store and the checkpoint.

        Returns what it wrote. Raises psycopg errors (Materialize; no statement
        timeout of its own), redis errors (each Redis round trip is bounded by the
        client's socket timeout); after either the caller starts a new session,
        which reloads the digests from Redis.
        """
        checkpoint = await self._writer.read_checkpoint()
        previous = self._digests
        full = False
        if previous is None:
            previous = await self._store.load()
            if previous is None or checkpoint is None:
                full, previous = True, {}
        async with source.read() as read:
            version = max(await read.timestamp(), checkpoint or 0)
            scan: RowScan | None = None
            rows = 0
            async for batch in read.batches():
                if scan is None:  # the columns are known once the first rows arrived
                    key_index, encoder = self._encoder_for(read.columns())
                    scan = RowScan(previous, version, encoder.encode)
                add = scan.add
                for row in batch:
                    key = row[key_index]
                    if key is not None:
                        add(str(key), row)
                rows += len(batch)
            if scan is None:
                scan = RowScan(previous, version, _no_rows)
            elif scan.repeated:
                # keys read twice: all their rows again, by key (same transaction)
                repeated = sorted(scan.repeated)
                again = await read.rows_of(repeated)
                rows += len(again)
                key_index, _ = self._encoder_for(read.columns())
                found: dict[str, list[Sequence[Any]]] = {key: [] for key in repeated}
                for row in again:
                    found.setdefault(str(row[key_index]), []).append(row)
                for key, key_rows in found.items():
                    scan.settle(key, key_rows)
        plan = plan_poll(version, previous, scan.digests, scan.violations.keys())
        self._metrics.rows_read.inc(rows)
        for step in poll_steps(full=full):
            await self._run(step, plan, scan)
        self._digests = scan.digests
        return plan

    async def _run(self, step: Step, plan: PollPlan, scan: RowScan) -> None:
        """One step of :func:`poll_steps`. Raises redis errors."""
        if step == "forget":
            await self._store.forget_all()
        elif step == "invalidate":
            await self._store.invalidate([*plan.upserts, *plan.deletes, *plan.violations])
        elif step == "write":
            await self._write(plan, scan)
        elif step == "reconcile":
            await self._writer.mark_reconcile(plan.version)
            self._metrics.snapshots.inc()
            log.info(
                "Full poll of %s: %d rows upserted at ts=%d, reconcile marker written",
                self._view,
                len(plan.upserts),
                plan.version,
            )
        elif step in ("remember", "remember_at_once"):
            digests = scan.digests
            stored = {key: digests[key] for key in (*plan.upserts, *plan.violations)}
            if step == "remember_at_once":
                await self._store.remember_at_once(stored, plan.deletes)
            else:
                await self._store.remember(stored, plan.deletes)
        else:
            await self._writer.commit(plan.version + 1)

    def _encoder_for(self, columns: Columns | None) -> tuple[int, DocumentEncoder]:
        """The key column's index and an encoder for these columns (built once per
        column layout: building one compiles a function)."""
        names, kinds = columns if columns is not None else ([], [])
        if self._encoder is None or self._encoder[:2] != (names, kinds):
            self._encoder = (names, kinds, DocumentEncoder(names, kinds))
        return names.index(self._settings.key_column), self._encoder[2]

    async def _write(self, plan: PollPlan, scan: RowScan) -> None:
        """The plan's entries and dead letters, :data:`_WRITE_CHANGES` changes per
        round trip. Raises as StreamWriter.write does."""
        ts = plan.version
        letters: list[DeadLetter] = []
        for key in plan.violations:
            docs = scan.violations[key]
            reason = violation_reason(len(docs), ts) + " (poll)"
            doc = b"[" + b",".join(docs) + b"]"
            letters.append(
                key_violation(self._view, ts, key, rows=len(docs), reason=reason, doc=doc)
            )
        limit = self._settings.max_document_bytes
        changes: list[tuple[int, bytes, bytes | None]] = []
        for key in plan.upserts:
            doc = scan.docs[key]
            if len(doc) > limit:  # OpenSearch would refuse it: dead-lettered, not written
                letters.append(oversize(ts, key, len(doc), limit))
                continue
            changes.append((ts, key.encode(), doc))
        changes.extend((ts, key.encode(), None) for key in plan.deletes)
        for chunk in _chunks(changes, _WRITE_CHANGES):
            entries = build_entries(
                chunk,
                self._settings.stream_partitions,
                max_bytes=self._settings.max_entry_bytes,
            )
            await self._writer.write(entries, letters, high_water=ts)
            letters = []
        if letters:
            await self._writer.write([], letters)
        if changes:
            log.info("Broadcasting %d changes for %s", len(changes), self._view)


def _no_rows(row: Sequence[object], version: int) -> bytes:
    raise RuntimeError("a row to encode where the view returned none")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
