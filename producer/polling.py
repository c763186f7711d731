"""USE_SUBSCRIBE=false: poll the view every POLL_INTERVAL seconds (runbook "Rollback to Polling").

One poll is one Materialize read transaction::

    BEGIN; SELECT mz_now()::text;              -- T, the poll's own timestamp
    SELECT <key> FROM <view>;                  -- every key that exists at T
    SELECT * FROM <view> WHERE effective_updated_at >= <since>;
    COMMIT

Changed rows become upserts, keys that were in the stored key set
(``searchsync:<view>:poll:keys``) but are gone become deletes, all at version
V = max(T, checkpoint): Materialize timestamps are what SUBSCRIBE stamps its
changes with, so a poll's versions never fall behind what SUBSCRIBE wrote and
never overtake what it will write for later changes. Then the key set is updated
and the checkpoint becomes V + 1, so a later switch back to SUBSCRIBE resumes
exactly after the poll.

``since`` is the previous poll's version minus :data:`OVERLAP_SECONDS`, because
``effective_updated_at`` is stamped when a transaction starts and becomes visible
later. The first poll of a process is a full read when the key set is missing
(SUBSCRIBE mode deletes it when it starts, since it does not maintain it): every
row is upserted at V and a reconcile marker at V removes what vanished while the
key set was not kept — so switching modes loses nothing either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql
from redis.asyncio import Redis

from common.config import Settings
from common.entries import DeadLetter
from common.keys import Keys
from producer.backpressure import BufferMonitor
from producer.batches import build_entries
from producer.documents import DocumentEncoder, kind_of_type
from producer.metrics import ProducerMetrics
from producer.subscribe import connect
from producer.writer import StreamWriter

__all__ = ["CHANGED_COLUMN", "OVERLAP_SECONDS", "PollPlan", "Poller", "plan_poll"]

log = logging.getLogger("producer.polling")

# The view's "last changed" column (runbook view schema).
CHANGED_COLUMN: Final = "effective_updated_at"
# How far before the previous poll changed rows are read again: covers transactions
# that ran up to this long and the delay before Materialize shows a change.
OVERLAP_SECONDS: Final = 60
_KEY_SET_CHUNK: Final = 5000

Values = tuple[object, ...]


class PollPlan(NamedTuple):
    """What one poll writes: changes at ``version``, violations, the new key set's delta."""

    version: int
    upserts: list[tuple[str, Values]]
    deletes: list[str]
    violations: list[tuple[str, list[Values]]]
    added: set[str]
    removed: set[str]


def plan_poll(
    version: int,
    changed_rows: Iterable[tuple[str, Values]],
    current_keys: set[str],
    previous_keys: set[str],
) -> PollPlan:
    """Pure: the changes of one poll.

    ``changed_rows`` are (key, row) for rows changed since the last poll (or all
    rows); a key with several rows is a key violation. Keys in ``previous_keys``
    and not in ``current_keys`` are deleted. A changed row whose key is not in
    ``current_keys`` cannot happen inside one transaction; it is ignored.
    """
    by_key: dict[str, list[Values]] = {}
    for key, row in changed_rows:
        by_key.setdefault(key, []).append(row)
    upserts: list[tuple[str, Values]] = []
    violations: list[tuple[str, list[Values]]] = []
    for key, rows in by_key.items():
        if key not in current_keys:
            continue
        if len(rows) == 1:
            upserts.append((key, rows[0]))
        else:
            violations.append((key, rows))
    removed = previous_keys - current_keys
    added = current_keys - previous_keys
    return PollPlan(version, upserts, sorted(removed), violations, added, removed)


class Poller:
    """Polls until stop (returns) or the first failure (raises)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        writer: StreamWriter,
        monitor: BufferMonitor,
        stop: asyncio.Event,
        *,
        metrics: ProducerMetrics | None = None,
        on_streaming: Any = None,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = Keys(settings.view_name, settings.stream_partitions)
        self._writer = writer
        self._monitor = monitor
        self._stop = stop
        self._metrics = metrics
        self._on_streaming = on_streaming
        self._view = settings.view_name
        self._last_version: int | None = None
        # True once connected: from then the poller watches ``stop`` and finishes the
        # poll in hand (see producer.service._until_stopped)
        self.watching_stop = False

    async def run(self) -> None:
        """Poll every POLL_INTERVAL seconds until stop. Raises psycopg/redis errors."""
        conn = await connect(self._settings)
        log.info(
            "Connected to Materialize for polling %s every %gs (USE_SUBSCRIBE=false)",
            self._view,
            self._settings.poll_interval,
        )
        self.watching_stop = True
        try:
            while not self._stop.is_set():
                await self._wait_resumed()
                if self._stop.is_set():
                    break
                await self.poll_once(conn)
                if self._on_streaming is not None:
                    self._on_streaming()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._settings.poll_interval)
        finally:
            await conn.close()

    async def _wait_resumed(self) -> None:
        if not self._monitor.active:
            return
        resumed = asyncio.create_task(self._monitor.wait_until_resumed())
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({resumed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            resumed.cancel()
            stopped.cancel()

    async def poll_once(self, conn: psycopg.AsyncConnection[Any]) -> PollPlan:
        """One poll, written to the streams and checkpointed. Returns what it wrote."""
        checkpoint = await self._writer.read_checkpoint()
        key_set_exists = bool(await self._redis.exists(self._keys.poll_keys))
        full = self._last_version is None and not key_set_exists
        since_ms = self._last_version if self._last_version is not None else checkpoint
        if since_ms is None:
            full = True
        previous = set() if full else await self._key_set()
        view = sql.Identifier(self._view)
        key = sql.Identifier(self._settings.key_column)
        async with conn.transaction():
            cursor = await conn.execute("SELECT mz_now()::text")
            row = await cursor.fetchone()
            assert row is not None
            now_ts = int(row[0])
            cursor = await conn.execute(sql.SQL("SELECT {} FROM {}").format(key, view))
            current_keys = {str(k) for (k,) in await cursor.fetchall() if k is not None}
            query = sql.SQL("SELECT * FROM {}").format(view)
            if not full:
                assert since_ms is not None
                since = dt.datetime.fromtimestamp(since_ms / 1000 - OVERLAP_SECONDS, dt.UTC)
                query = sql.SQL("{} WHERE {} >= {}").format(
                    query, sql.Identifier(CHANGED_COLUMN), sql.Literal(since)
                )
            cursor = await conn.execute(query)
            rows = await cursor.fetchall()
            description = cursor.description or []
            names = [column.name for column in description]
            key_index = names.index(self._settings.key_column)
            # New keys whose rows carry an old effective_updated_at (a long transaction,
            # a restore) are read by key, in the same transaction.
            seen = {str(r[key_index]) for r in rows}
            missing = sorted((current_keys - previous) - seen)
            for chunk in _chunks(missing):
                cursor = await conn.execute(
                    sql.SQL("SELECT * FROM {} WHERE {} IN ({})").format(
                        view, key, sql.SQL(", ").join(sql.Literal(k) for k in chunk)
                    )
                )
                rows.extend(await cursor.fetchall())
        encoder = DocumentEncoder(names, [kind_of_type(c.type_code) for c in description])
        version = max(now_ts, checkpoint or 0)
        plan = plan_poll(
            version,
            ((str(r[key_index]), tuple(r)) for r in rows if r[key_index] is not None),
            current_keys,
            previous,
        )
        if self._metrics is not None:
            self._metrics.rows_read.inc(len(rows))
        await self._write(plan, encoder)
        if full:
            await self._writer.mark_reconcile(version)
            if self._metrics is not None:
                self._metrics.snapshots.inc()
            log.info(
                "Full poll of %s: %d rows upserted at ts=%d, reconcile marker written",
                self._view,
                len(plan.upserts),
                version,
            )
        await self._update_key_set(plan.added, plan.removed)
        await self._writer.commit(version + 1)
        self._last_version = version
        return plan

    async def _write(self, plan: PollPlan, encoder: DocumentEncoder) -> None:
        ts = plan.version
        changes: list[tuple[int, bytes, bytes | None]] = [
            (ts, key.encode(), encoder.encode(row, ts)) for key, row in plan.upserts
        ]
        changes.extend((ts, key.encode(), None) for key in plan.deletes)
        letters = []
        for key, rows in plan.violations:
            log.error(
                "Key violation in %s at ts=%d: key %s has %d live rows; "
                "sent to the dead-letter stream",
                self._view,
                ts,
                key,
                len(rows),
            )
            letters.append(
                DeadLetter(
                    ts=ts,
                    op=b"u",
                    key=key.encode(),
                    reason=f"key violation: {len(rows)} live rows for one key at ts {ts} (poll)",
                    source="producer",
                    doc=encoder.encode_array(rows, ts),
                )
            )
        entries = build_entries(changes, self._settings.stream_partitions)
        await self._writer.write(entries, letters)
        if changes:
            log.info("Broadcasting %d changes for %s", len(changes), self._view)

    async def _key_set(self) -> set[str]:
        members = await self._redis.smembers(self._keys.poll_keys)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def _update_key_set(self, added: set[str], removed: set[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for chunk in _chunks(sorted(removed)):
                pipe.srem(self._keys.poll_keys, *chunk)
            for chunk in _chunks(sorted(added)):
                pipe.sadd(self._keys.poll_keys, *chunk)
            await pipe.execute()


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _KEY_SET_CHUNK):
        yield items[start : start + _KEY_SET_CHUNK]
