"""One SUBSCRIBE session: connect, declare, then FETCH → consolidate → write → checkpoint.

While backpressure is active the session sends nothing, and its transaction sits
idle; Materialize ends a transaction idle for ``idle_in_transaction_session_timeout``
(2 min by default) with an error. A pause longer than half of that ends the
session cleanly instead (the write in hand finished and checkpointed, the cursor
closed, so Materialize holds nothing for it either) and :attr:`ended_paused`
tells the service to start the next session from the checkpoint once the buffer
has drained.

A session ends when the stop event is set (returns) or on the first failure
(raises; the service backs off and starts a new session from the checkpoint).
The next FETCH is sent as soon as a batch arrives, and a batch is written to
Redis while the next one is processed, so Materialize, this process and Redis work
at the same time; no FETCH is sent while backpressure is active.

On stop: a batch being written is finished and checkpointed (the timestamps in
hand that are complete), a FETCH that is waiting is cancelled, the connection is
closed. Rows of a timestamp not yet complete are dropped: the checkpoint is below
them, so the next session gets them again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import psycopg

from ..common.config import Settings
from ..common.entries import DeadLetter
from .backpressure import wait_out
from .batches import Entry, build_entries, snapshot_entries
from .consolidate import Consolidated, Consolidator
from .documents import DocumentEncoder
from .failures import AsOfRefused
from .letters import dead_letters_for, oversize
from .metrics import ProducerMetrics
from .ports import Backpressure, EntrySink, OpenRows, RowSource
from .resume import StartPlan, as_of_refused
from .rows import Rejected

__all__ = [
    "PAUSE_FRACTION",
    "SubscribeSession",
    "idle_timeout_seconds",
    "interval_seconds",
    "pause_limit",
]

log = logging.getLogger("searchsync.producer.session")


def _rows_or_refusal(
    fetch: asyncio.Task[Sequence[tuple[Any, ...]]], plan: StartPlan, streaming: bool
) -> Sequence[tuple[Any, ...]]:
    """A finished FETCH's rows; a refused AS OF (before any row) as :class:`AsOfRefused`."""
    try:
        return fetch.result()
    except psycopg.Error as error:
        if plan.as_of is not None and not streaming and as_of_refused(str(error)):
            raise AsOfRefused(str(error).splitlines()[0]) from error
        raise


async def _wind_down(
    subscription: RowSource,
    fetch: asyncio.Task[Sequence[tuple[Any, ...]]] | None,
    writing: asyncio.Task[None] | None,
    *,
    failed: bool,
) -> None:
    """Cancel a waiting FETCH; finish the write in hand (its errors count unless failing)."""
    if fetch is not None:
        if not fetch.done():
            await subscription.cancel()
        # gathered when done too: a FETCH that failed while the write in hand failed is
        # retrieved here, or asyncio logs "Task exception was never retrieved" (found by
        # tests/sim, seed 321)
        await asyncio.gather(fetch, return_exceptions=True)
    if writing is not None:
        if failed:  # already failing: the write's own outcome no longer matters
            await asyncio.gather(writing, return_exceptions=True)
        else:  # stopping: finish what is in hand and checkpoint it
            await writing


# A pause may last this fraction of Materialize's idle_in_transaction_session_timeout
# before the session ends itself: a FETCH in flight or a slow write can add seconds.
PAUSE_FRACTION: Final = 0.5
_INTERVAL_UNITS: Final = {
    "": 0.001,  # a bare number: the setting's unit, milliseconds
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_INTERVAL: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def interval_seconds(text: str) -> float | None:
    """Seconds of a SHOW value like ``2min``, ``2 min``, ``120s``, ``120000 ms``,
    ``120000`` (ms) or ``00:02:00``; None when it cannot be read."""
    value = text.strip().lower()
    if ":" in value:
        try:
            hours, minutes, seconds = (float(part) for part in value.split(":"))
        except ValueError:
            return None
        return hours * 3600 + minutes * 60 + seconds
    total, position = 0.0, 0
    for match in _INTERVAL.finditer(value):
        unit = match.group(2)
        if match.start() != position or unit not in _INTERVAL_UNITS:
            return None
        total += float(match.group(1)) * _INTERVAL_UNITS[unit]
        position = match.end()
    return total if position == len(value) and value else None


def pause_limit(idle_timeout: float | None) -> float | None:
    """How long a pause may last before the session ends itself (None: for ever)."""
    if not idle_timeout:
        return None
    return idle_timeout * PAUSE_FRACTION


async def idle_timeout_seconds(conn: psycopg.AsyncConnection[Any]) -> float | None:
    """The session's idle_in_transaction_session_timeout in seconds (0: none); the
    default of Materialize (2 min) when it cannot be read. Raises psycopg errors of
    a broken connection."""
    try:
        cursor = await conn.execute("SHOW idle_in_transaction_session_timeout")
        row = await cursor.fetchone()
    except psycopg.errors.Error as error:
        if isinstance(error, psycopg.OperationalError):
            raise
        log.debug("SHOW idle_in_transaction_session_timeout failed: %s", error)
        return DEFAULT_IDLE_TIMEOUT_SECONDS
    seconds = interval_seconds(str(row[0])) if row else None
    return DEFAULT_IDLE_TIMEOUT_SECONDS if seconds is None else seconds


# Materialize's default idle_in_transaction_session_timeout
DEFAULT_IDLE_TIMEOUT_SECONDS: Final = 120.0


class _SnapshotDone(NamedTuple):
    as_of: int
    rows: int
    live_keys: int
    violated_keys: int
    state_bytes: int


class _Batch(NamedTuple):
    entries: list[Entry]
    letters: list[DeadLetter]
    changes: int
    high_water: int | None  # the highest ts among the entries


class SubscribeSession:
    """Runs one subscription until stop or failure. Not reusable.

    Its services come through producer.ports: ``open_rows`` connects the row source
    (producer.adapters.open_subscription: Materialize), ``writer`` is the entry sink
    (producer.writer.StreamWriter), ``monitor`` the backpressure gate.
    """

    def __init__(
        self,
        settings: Settings,
        writer: EntrySink,
        monitor: Backpressure,
        stop: asyncio.Event,
        *,
        open_rows: OpenRows,
        metrics: ProducerMetrics | None = None,
        on_streaming: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._monitor = monitor
        self._open_rows = open_rows
        self._stop = stop
        self._metrics = metrics if metrics is not None else ProducerMetrics.unserved()
        self._on_streaming = on_streaming
        self._view = settings.view_name
        self.snapshot_written = False
        # True from the first FETCH on: from then the session watches ``stop`` itself
        # and winds down (finish the write in hand, checkpoint); before, it holds
        # nothing and may simply be cancelled.
        self.watching_stop = False
        # ended because backpressure lasted longer than PAUSE_FRACTION of Materialize's
        # idle-in-transaction timeout (see the module docstring)
        self.ended_paused = False
        self._pause_limit: float | None = None

    async def run(self, plan: StartPlan) -> None:
        """Stream until ``stop`` is set. Raises :class:`AsOfRefused` if Materialize
        refuses ``plan.as_of``, psycopg / redis errors on failures.
        """
        subscription, idle_timeout = await self._open_rows(self._settings)
        self._pause_limit = pause_limit(idle_timeout)
        fetch: asyncio.Task[Sequence[tuple[Any, ...]]] | None = None
        try:
            log.info("Starting SUBSCRIBE for view: %s", self._view)
            try:
                await subscription.declare(
                    as_of=plan.as_of, snapshot=plan.snapshot, at_least=plan.at_least
                )
            except psycopg.Error as error:
                if plan.as_of is not None and as_of_refused(str(error)):
                    raise AsOfRefused(str(error).splitlines()[0]) from error
                raise
            if not self._monitor.active:  # else the loop waits for backpressure first
                fetch = asyncio.create_task(subscription.fetch())
            if plan.snapshot and plan.write_snapshot:
                log.info("SUBSCRIBE started for %s, receiving snapshot...", self._view)
            elif plan.snapshot:
                log.info(
                    "SUBSCRIBE started for %s, reading the snapshot%s for the per-key state",
                    self._view,
                    f" at ts={plan.as_of}" if plan.as_of is not None else "",
                )
            elif plan.as_of is not None:
                log.info(
                    "SUBSCRIBE started for %s, resuming after ts=%d (no snapshot)",
                    self._view,
                    plan.as_of,
                )
            else:
                log.info(
                    "Snapshot complete for %s: 0 rows "
                    "(discarding snapshot, streaming changes only)",
                    self._view,
                )
            self.watching_stop = True
            await self._stream(subscription, plan, fetch)
            fetch = None
        finally:
            if fetch is not None:
                if not fetch.done():
                    fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)  # retrieved if it failed
            await subscription.close()

    async def _stream(
        self,
        subscription: RowSource,
        plan: StartPlan,
        first_fetch: asyncio.Task[Sequence[tuple[Any, ...]]] | None,
    ) -> None:
        consolidator = Consolidator(
            snapshot=plan.snapshot,
            envelope=self._settings.subscribe_envelope,
            write_snapshot=plan.write_snapshot,
        )
        snapshot_rows = 0
        streaming = False
        fetch: asyncio.Task[Sequence[tuple[Any, ...]]] | None = first_fetch
        # Batch k is written while batch k+1 is fetched and encoded; writes stay in
        # order because a write starts only after the previous one finished.
        writing: asyncio.Task[None] | None = None
        stop_wait = asyncio.create_task(self._stop.wait())
        failed = True
        try:
            while True:
                if fetch is None:
                    if not await self._resumed_or_stopped(stop_wait):
                        break
                    fetch = asyncio.create_task(subscription.fetch())
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():  # stop requested while waiting for rows
                    await subscription.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
                    fetch = None
                    break
                rows = _rows_or_refusal(fetch, plan, streaming)
                fetch = None
                # Ask for the next rows now, so Materialize prepares them while this
                # batch is parsed, encoded and written; sleep(0) lets the task send
                # the FETCH before the CPU work below (unless paused or stopping).
                if not self._monitor.active and not self._stop.is_set():
                    fetch = asyncio.create_task(subscription.fetch())
                    await asyncio.sleep(0)
                layout = subscription.layout
                encoder = subscription.encoder
                assert layout is not None and encoder is not None
                rejected: list[Rejected] = []
                out = consolidator.feed_rows(layout, rows, rejected)
                self._metrics.rows_read.inc(len(rows))
                if not streaming and out.as_of is not None:
                    streaming = True
                    self._on_streaming()
                snapshot_rows += out.snapshot_rows
                batch = self._prepare(out, rejected, encoder)
                snapshot_at = None
                if out.snapshot_complete and plan.snapshot and consolidator.as_of is not None:
                    snapshot_at = _SnapshotDone(
                        consolidator.as_of,
                        snapshot_rows,
                        consolidator.live_keys,
                        consolidator.violated_keys,
                        consolidator.state_bytes(),
                    )
                if writing is not None:
                    await writing
                    writing = None
                if batch.entries or batch.letters or out.frontier is not None or snapshot_at:
                    writing = asyncio.create_task(
                        self._apply(batch, out.frontier, snapshot_at, plan)
                    )
            failed = False
        finally:
            stop_wait.cancel()
            await _wind_down(subscription, fetch, writing, failed=failed)

    async def _resumed_or_stopped(self, stop_wait: asyncio.Task[Any]) -> bool:
        """Wait out backpressure; False if stop was requested meanwhile, or if the pause
        outlasted the safe part of the idle timeout (then :attr:`ended_paused`)."""
        waited = await wait_out(self._monitor, self._stop, self._pause_limit, stop_wait=stop_wait)
        if waited == "timed out":
            self.ended_paused = True
            log.info(
                "Backpressure has lasted %.0fs: ending the SUBSCRIBE for %s before Materialize "
                "ends its idle transaction; it resumes from the checkpoint once the buffer "
                "drains",
                self._pause_limit,
                self._view,
            )
            return False
        return waited == "resumed"

    def _prepare(
        self, out: Consolidated, rejected: list[Rejected], encoder: DocumentEncoder
    ) -> _Batch:
        """Encode the settled changes and group them into entries (CPU only)."""
        encode = encoder.encode
        settings = self._settings
        partitions = settings.stream_partitions
        max_doc = settings.max_document_bytes
        entries: list[Entry] = []
        too_large: list[tuple[int, str, int]] = []
        if out.snapshot_ts is not None:  # before the changes: they are not below the AS OF
            too_big: list[tuple[str, int]] = []
            entries = snapshot_entries(
                out.snapshot_ts, out.snapshot, encode, partitions,
                max_bytes=settings.max_entry_bytes, max_doc_bytes=max_doc, oversize=too_big,
            )  # fmt: skip
            too_large += [(out.snapshot_ts, key, size) for key, size in too_big]
        changes: list[tuple[int, bytes, bytes | None]] = []
        for ts, key, values in out.changes:
            doc = None if values is None else encode(values, ts)
            if doc is not None and len(doc) > max_doc:
                too_large.append((ts, key, len(doc)))
                continue
            changes.append((ts, key.encode(), doc))
        entries += build_entries(changes, partitions, max_bytes=settings.max_entry_bytes)
        letters = (
            dead_letters_for(self._view, out, rejected, encoder)
            if out.violations or rejected
            else []
        )
        letters += [oversize(ts, key, size, max_doc) for ts, key, size in too_large]
        high_water = max(
            (ts for ts in (out.snapshot_ts, changes[-1][0] if changes else None) if ts is not None),
            default=None,
        )
        written = len(out.snapshot) + len(out.changes) - len(too_large)
        return _Batch(entries, letters, written, high_water)

    async def _apply(
        self,
        batch: _Batch,
        frontier: int | None,
        snapshot: _SnapshotDone | None,
        plan: StartPlan,
    ) -> None:
        """Write a batch, then (snapshot done) the reconcile marker, then the checkpoint."""
        if batch.entries or batch.letters:
            await self._writer.write(batch.entries, batch.letters, high_water=batch.high_water)
        if batch.changes:
            log.info("Broadcasting %d changes for %s", batch.changes, self._view)
        if snapshot is not None:
            await self._finish_snapshot(snapshot, plan)
        if frontier is not None:
            await self._writer.commit(frontier)
            log.debug("Progress update: %s at ts=%d", self._view, frontier)

    async def _finish_snapshot(self, snapshot: _SnapshotDone, plan: StartPlan) -> None:
        state = (
            f"{snapshot.live_keys} keys live, {snapshot.violated_keys} in key violation, "
            f"{snapshot.state_bytes / max(snapshot.live_keys, 1):.1f} bytes of state a key"
        )
        if not plan.write_snapshot:
            log.info(
                "Snapshot complete for %s: %d rows (discarding snapshot, streaming changes "
                "only; %s)",
                self._view,
                snapshot.rows,
                state,
            )
            return
        if plan.reconcile:
            await self._writer.mark_reconcile(snapshot.as_of)
        self._metrics.snapshots.inc()
        self.snapshot_written = True
        log.info(
            "Snapshot complete for %s: %d rows (written as upserts at ts=%d; %s)",
            self._view,
            snapshot.rows,
            snapshot.as_of,
            state,
        )
