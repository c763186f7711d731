"""One partition, while this consumer holds its lease: read, send, settle, repeat.

A runner first takes over and finishes the partition's pending entries, then
reads new ones. After an error it starts over from the pending entries. Batches
of one partition are strictly sequential (one bulk in flight per partition): a
batch is settled completely, including retries, before the next is read, which
keeps per-key order. Different partitions run concurrently.

What MAX_DELIVERIES counts is decided in one place, consumer.attempts: bulks that
carried an entry and failed on it or never came back. Re-reading or taking over
entries costs nothing, so a rebalance, a restart or a Redis outage longer than
the lease never pushes an entry into the dlq.

When OpenSearch refuses writes for a reason that is not the documents' (401,
403, a 404 for the whole request, a failed TLS handshake), the partition is
*blocked*: its changes are retried with backoff and never dead-lettered, an
ERROR names the cause at most once a minute (per consumer), the metric
``opensearch_sync_errors_total{kind="auth"|"endpoint"|"tls"}`` counts it, and
``searchsync:{<view>:p<N>}:blocked`` says why, so ``searchsync status`` shows it.
When the alias itself is wrong (a concrete index named like it, no write index),
retrying cannot help: the runner raises common.index.IndexLayoutError and the
consumer stops with a message that names the fix.

Entries can also become pending behind the runner's back, after its takeover: a
previous owner paused past its lease (GC pause, SIGSTOP, slow host) may do one
more XREADGROUP ``>`` before its fence stops it, and leaves those entries pending
under its name, where no read of ``>`` ever sees them again. Two checks find
such strays and take them over:

- before a progress entry's frontier is written, nothing below the entry may be
  pending in the group (:meth:`PartitionRunner._advance`), or ``applied`` would
  claim changes are indexed that are not; one XPENDING, in the acknowledging
  pipeline, per progress entry (about one a second);
- when no progress entry was checked for LEASE_TTL_SECONDS (a quiet producer),
  anything pending in the partition between batches, when this runner has
  nothing in hand, is a stray (:meth:`PartitionRunner._sweep_strays`).

Strays are older than what the runner applied since; external versions turn
their late changes into harmless version conflicts wherever a newer change of
the key is already in, so per-key order still holds.

A change below the partition's snapshot floor (the highest reconcile marker it has
acknowledged, consumer.batch) is settled without being sent. The runner reads the
floor at each takeover (:meth:`PartitionRunner._claim_all`), keeps it in memory, and
raises it with every reconcile marker it reads; the settle that acknowledges a
marker raises the stored floor before the XACK (consumer.acks), so the next owner
starts from it.

A runner ends when asked to stop (after settling the batch in hand), when its
lease is gone (without acknowledging anything more: the next owner re-delivers),
or when a stop arrives while it is waiting to retry (the batch stays pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redis.exceptions import RedisError

from ..common.config import Settings
from ..common.entries import MAX_CHANGES_PER_ENTRY
from ..common.errors import Failure, FatalError, classify
from ..common.index import IndexLayoutError, layout_problem
from ..common.logs import LogGate
from .attempts import new_token
from .batch import (
    Batch,
    Item,
    RawEntry,
    chunked,
    entries_to_read,
    floor_of,
    loose_ts,
    should_flush,
)
from .bulk import ItemResult
from .deadletters import log_letters
from .metrics import ConsumerMetrics
from .outcomes import (
    Blocked,
    Outcome,
    RequestVerdict,
    RetryPolicy,
    Round,
    Verdict,
    blocked_kind,
    judge,
)
from .ports import Clock, IndexSink, StreamStore
from .sender import BulkFailed

__all__ = ["BLOCKED_LOG_SECONDS", "PartitionRunner", "RunnerDeps"]

log = logging.getLogger(__name__)

# A cause that lasts is logged as an ERROR at most this often per consumer.
BLOCKED_LOG_SECONDS: Final = 60.0

_FIXES: Final = {
    Blocked.AUTH: "check OS_USER / OS_PASSWORD and that the role may index into the alias",
    Blocked.ENDPOINT: "check OS_HOSTS (or OS_HOST / OS_PORT) and any proxy in front of OpenSearch",
    Blocked.TLS: "check OS_USE_SSL and the certificates OpenSearch presents",
}


class LeaseLost(Exception):
    """The partition's lease is no longer ours: stop without acknowledging."""


class Abandoned(Exception):
    """Asked to stop while waiting to retry: leave the batch pending for the next owner."""


@dataclass(frozen=True, slots=True)
class RunnerDeps:
    """What every runner of one consumer shares (consumer.adapters.runner_deps builds the
    real ones; the simulator in tests/sim builds in-memory ones)."""

    settings: Settings
    store: StreamStore
    sink: IndexSink
    clock: Clock
    me: str
    metrics: ConsumerMetrics
    policy: RetryPolicy
    # this process's in-flight marker token (consumer.attempts): a runner started again
    # in the same process (a lease lost and won back) recognises its markers as its own
    token: str
    # one ERROR a minute per cause for the whole consumer, not one per partition
    gate: LogGate


class PartitionRunner:
    # the changes an entry is taken to hold until a read says otherwise: the most the
    # producer writes, so the first read of a batch never takes more than
    # MAX_BATCH_SIZE changes plus one entry (a runner that guessed one change an entry
    # took a whole replayed backlog of full entries into memory: MAX_BATCH_SIZE entries
    # of up to 256 changes). Later reads of the batch go by the changes per entry seen.
    first_read_changes_per_entry: float = float(MAX_CHANGES_PER_ENTRY)

    def __init__(self, deps: RunnerDeps, partition: int) -> None:
        self.deps = deps
        self.partition = partition
        self.store = deps.store
        self.clock = deps.clock
        self.stopping = asyncio.Event()
        self.in_hand = 0  # changes read and not yet acknowledged
        # monotonic time of the last check that nothing pending escaped this runner
        self._checked_at = self.clock.monotonic()
        # changes per entry in the last read: sizes the next read (batch.entries_to_read)
        self._changes_per_entry = self.first_read_changes_per_entry
        # blocked:p<N> was written by this runner and not cleared since
        self._blocked_since: int | None = None
        # marks this runner's bulks in flight (consumer.attempts); a new one after an
        # unexpected error, so that the bulks in flight then count as attempts
        self._token = deps.token
        # the snapshot floor (consumer.batch): read at each takeover, raised by markers read
        self._floor: int | None = None

    async def run(self) -> None:
        """Work the partition until stopped, fenced off, or abandoned.

        Raises only FatalError (common.index.IndexLayoutError: the alias cannot be
        written as it is; or a failure common.errors classifies as fatal, such as a
        Redis error reply like NOPERM or WRONGTYPE); the consumer then stops.
        """
        backoff = self.deps.policy.backoff()
        while not self.stopping.is_set():
            try:
                await self._claim_all()
                while not self.stopping.is_set():
                    await self._sweep_strays()
                    batch = await self._next_batch()
                    if batch is not None:
                        await self._process(batch)
                        backoff.reset()
                return
            except (LeaseLost, Abandoned):
                return
            except Exception as error:
                failure = classify(error)  # common.errors: the producer's taxonomy too
                if failure is Failure.FATAL:
                    if isinstance(error, FatalError):
                        raise
                    # redis-py drops the reply's code from some messages: its class says it
                    service = "Redis" if isinstance(error, RedisError) else "OpenSearch"
                    raise FatalError(
                        f"partition p{self.partition}: {service} refused: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                delay = backoff.next_delay()
                if failure is Failure.TRANSIENT:
                    service = "Redis" if isinstance(error, RedisError) else "Service"
                    log.warning(
                        "%s error on partition p%d, retrying in %.1fs: %s",
                        service,
                        self.partition,
                        delay,
                        error,
                    )
                else:
                    # maybe the entries' fault: with a new token, the takeover counts the
                    # bulk in flight as an attempt (consumer.attempts), so an entry that
                    # always breaks the runner ends in the dlq
                    self._token = new_token(self.deps.me)
                    log.exception("Partition p%d failed, retrying in %.1fs", self.partition, delay)
            finally:
                self.in_hand = 0
            with contextlib.suppress(Abandoned):
                await self._pause(delay)

    # reading

    async def _claim_all(self) -> None:
        """Take over every pending entry of the partition (XAUTOCLAIM), oldest first,
        and settle them. Raises redis.exceptions.RedisError."""
        await self._recover_attempts()
        # a marker this runner read but never acknowledged is delivered again below
        self._floor = await self.store.snapshot_floor(self.partition)
        self._expect_full_entries()  # what is pending may be a dead owner's full entries
        cursor = b"0-0"
        while not self.stopping.is_set():
            cursor, entries = await self.store.claim_pending(
                self.partition, self._entries_wanted(self.deps.settings.max_batch_size), cursor
            )
            if entries:
                log.info(
                    "Took over %d pending entries of partition p%d", len(entries), self.partition
                )
                await self._process(await self._batch_of(entries))
            if cursor == b"0-0":
                self._checked_at = self.clock.monotonic()
                return

    async def _recover_attempts(self) -> None:
        """Count the bulks other runners left in flight (consumer.attempts)."""
        counted = await self.store.recover_attempts(self.partition, self._token)
        if counted:
            log.warning(
                "%d entries of partition p%d were on the wire when their consumer died or "
                "lost the partition: one attempt each",
                counted,
                self.partition,
            )

    async def _sweep_strays(self) -> None:
        """Take over what is pending in the partition, if nothing was checked for a while.

        Runs between batches, when this runner has nothing in hand: any pending
        entry of the partition then is a stray (see the module docstring). Due
        when neither a takeover nor a progress entry's check (:meth:`_advance`)
        happened for LEASE_TTL_SECONDS, so with a live producer it costs nothing
        and otherwise one XPENDING per partition per LEASE_TTL_SECONDS. Raises
        redis.exceptions.RedisError, :class:`LeaseLost`.
        """
        if self.clock.monotonic() - self._checked_at < self.deps.settings.lease_ttl_seconds:
            return
        self._checked_at = self.clock.monotonic()
        strays = await self.store.pending_count(self.partition)
        if not strays:
            return
        # a runner paused past its own lease must not take entries from the new owner
        await self._fence()
        log.warning(
            "Found %d entries pending in partition p%d that no consumer has in hand; "
            "taking them over",
            strays,
            self.partition,
        )
        await self._claim_all()

    def _new_batch(self) -> Batch:
        settings = self.deps.settings
        return Batch(
            self.partition, settings.max_deliveries, self.clock.monotonic(), floor=self._floor
        )

    async def _add_entries(self, batch: Batch, entries: Sequence[RawEntry]) -> None:
        """Add ``entries`` to ``batch``, checked against the producer's high-water mark."""
        if entries:
            highest = max(loose_ts(entry.fields) for entry in entries)
            batch.ts_bound = await self.store.ts_bound(highest)
        for entry in entries:
            batch.add(entry)
        self._floor = batch.floor  # entries read later come after its markers
        if batch.entries:
            self._changes_per_entry = max(1.0, batch.changes / len(batch.entries))

    async def _batch_of(self, entries: Sequence[RawEntry]) -> Batch:
        batch = self._new_batch()
        await self._add_entries(batch, entries)
        return batch

    def _expect_full_entries(self) -> None:
        """Before a batch's or a takeover's first read: after a run of small entries
        (quiet live traffic) a replay may have moved the group back onto a snapshot's
        full ones, and the last read's figure would take MAX_BATCH_SIZE of them."""
        self._changes_per_entry = max(self._changes_per_entry, self.first_read_changes_per_entry)

    def _entries_wanted(self, room: int) -> int:
        return entries_to_read(room, self._changes_per_entry)

    async def _next_batch(self) -> Batch | None:
        """New entries up to the flush policy; None when a blocking read found nothing."""
        settings = self.deps.settings
        batch: Batch | None = None
        self._expect_full_entries()
        while True:
            want = self._entries_wanted(settings.max_batch_size - (batch.changes if batch else 0))
            entries = await self.store.read_new(self.partition, want, block=batch is None)
            if batch is None:
                if not entries:
                    return None
                batch = self._new_batch()
            await self._add_entries(batch, entries)
            self.in_hand = batch.changes
            if should_flush(
                len(batch.entries),
                batch.changes,
                batch.age(self.clock.monotonic()),
                drained=len(entries) < want,
                max_changes=settings.max_batch_size,
                max_age_s=settings.max_batch_age_seconds,
            ):
                return batch

    # sending

    async def _process(self, batch: Batch) -> None:
        """Send ``batch`` until every change is settled; acknowledge as items settle.

        Raises IndexLayoutError, :class:`LeaseLost`, :class:`Abandoned`,
        redis.exceptions.RedisError.
        """
        settings = self.deps.settings
        self.in_hand = batch.changes
        backoff = self.deps.policy.backoff()
        queue: deque[list[Item]] = deque(
            chunked(batch.items(), settings.max_batch_size, settings.max_bulk_bytes)
        )
        while queue:
            items = queue.popleft()
            sent = [batch.entries[index].id for index in dict.fromkeys(i.entry for i in items)]
            await self._fence(sent)
            try:
                results = await self.deps.sink.send([item.change for item in items])
            except BulkFailed as failure:
                await self._request_failed(
                    batch, items, failure, sent=sent, queue=queue, delay=backoff.next_delay()
                )
                continue
            verdicts = self._judge(batch, items, results)
            charged = [batch.entries[item.entry].id for item in verdicts.charged]
            await self._settle(batch, final=False, sent=sent, charged=charged)
            if verdicts.layout:
                raise IndexLayoutError(_layout_message(results, verdicts))
            if verdicts.blocked_by:
                await self._block(Blocked.AUTH, verdicts.blocked_by)
            else:
                self.deps.metrics.health.answered("OpenSearch")
                if self._blocked_since is not None:
                    await self._unblock()
            if verdicts.retry:
                delay = backoff.next_delay()
                log.warning(
                    "OpenSearch bulk operation failed for %d of %d items, retrying in %.1fs",
                    len(verdicts.retry),
                    len(items),
                    delay,
                )
                await self._pause(delay)
                queue.append(verdicts.retry)
            else:
                backoff.reset()
        await self._settle(batch, final=True)

    def _judge(self, batch: Batch, items: list[Item], results: Sequence[ItemResult]) -> Round[Item]:
        metrics = self.deps.metrics
        verdicts = judge(items, [i.deliveries for i in items], results, self.deps.policy)
        upserts = 0
        for item in verdicts.applied:
            batch.settle(item)
            upserts += item.change.doc is not None
        for item, reason in zip(verdicts.dead, verdicts.reasons, strict=True):
            batch.dead_letter(item, reason)
        for item in verdicts.charged:
            item.deliveries += 1
        log.info("Synced %d documents, %d errors", len(verdicts.applied), verdicts.errors)
        if verdicts.errors:
            log.warning("OpenSearch bulk operation failed: %s", verdicts.first_error)
        metrics.events.labels("upsert").inc(upserts)
        metrics.events.labels("delete").inc(len(verdicts.applied) - upserts)
        for kind, count in (
            ("throttled", verdicts.throttled),
            ("failed", verdicts.failed),
            ("rejected", verdicts.rejected),
        ):
            if count:
                metrics.errors.labels(kind).inc(count)
        return verdicts

    async def _request_failed(
        self,
        batch: Batch,
        items: list[Item],
        failure: BulkFailed,
        *,
        sent: list[bytes],
        queue: deque[list[Item]],
        delay: float,
    ) -> None:
        """Act on a failure of the whole request (no item outcome is known)."""
        self.deps.metrics.errors.labels("request").inc()
        verdict = failure.verdict
        if verdict is RequestVerdict.PROBE:
            verdict = await self._probe(items)
        if verdict is RequestVerdict.BLOCKED:
            # _block words the health line ("refuses writes (auth): …"); the raw reason
            # written first raced it, and /healthz could show either
            await self._close_attempts(sent)
            await self._block(blocked_kind(failure.status, tls=failure.tls), failure.reason)
            await self._pause(delay)
            queue.appendleft(items)
            return
        self.deps.metrics.health.failed("OpenSearch", failure.reason)
        if verdict is RequestVerdict.SPLIT:
            # the request is at fault and names no item: halve it until the culprit is alone
            await self._close_attempts(sent)
            if len(items) > 1:
                middle = len(items) // 2
                queue.appendleft(items[middle:])
                queue.appendleft(items[:middle])
                log.warning(
                    "OpenSearch bulk operation failed: %s (splitting %d items in two)",
                    failure.reason,
                    len(items),
                )
                return
            log.warning("OpenSearch bulk operation failed: %s", failure.reason)
            batch.dead_letter(items[0], f"request rejected: {failure.reason}")
            await self._settle(batch, final=False)
            return
        if verdict is RequestVerdict.PROBE:  # a lone item OpenSearch keeps dropping
            if await self._charge_dropped(batch, items[0], failure, delay):
                queue.appendleft(items)
            return
        await self._close_attempts(sent)
        log.warning(
            "OpenSearch bulk operation failed: %s (retrying %d items in %.1fs)",
            failure.reason,
            len(items),
            delay,
        )
        await self._pause(delay)
        queue.appendleft(items)

    async def _probe(self, items: list[Item]) -> RequestVerdict:
        """No answer came: OpenSearch down (retry) or this request dropped (split it; a lone
        item stays PROBE and is charged)."""
        if not await self.deps.sink.answers():
            return RequestVerdict.RETRY
        return RequestVerdict.SPLIT if len(items) > 1 else RequestVerdict.PROBE

    async def _charge_dropped(
        self, batch: Batch, item: Item, failure: BulkFailed, delay: float
    ) -> bool:
        """OpenSearch answers other requests but drops the one holding only ``item`` (a
        document it cannot take, e.g. above its http.max_content_length): a FAILED
        attempt of the item, so it cannot be retried forever. True: retry it."""
        verdict = self.deps.policy.verdict(Outcome.FAILED, item.deliveries)
        self.deps.metrics.errors.labels("failed").inc()
        if verdict is Verdict.DEAD_LETTER:
            reason = f"gave up after {item.deliveries} attempts: OpenSearch dropped the request"
            batch.dead_letter(item, f"{reason} ({failure.reason})")
            await self._settle(batch, final=False)
            return False
        item.deliveries += 1
        entry_id = [batch.entries[item.entry].id]
        await self.store.settle(self.partition, [], 0, sent=entry_id, charged=entry_id)
        log.warning(
            "OpenSearch drops the request holding only key %s (%s); attempt %d of %d, "
            "retrying in %.1fs",
            item.change.key.decode(errors="replace"),
            failure.reason,
            item.deliveries - 1,
            self.deps.policy.max_deliveries,
            delay,
        )
        await self._pause(delay)
        return True

    # blocked partitions

    async def _block(self, kind: Blocked, reason: str) -> None:
        """Record that OpenSearch refuses this partition's writes, and why (see the module
        docstring). Raises redis.exceptions.RedisError."""
        settings = self.deps.settings
        now_ms = int(self.clock.time() * 1000)
        if self._blocked_since is None:
            self._blocked_since = now_ms
        self.deps.metrics.errors.labels(kind.value).inc()
        self.deps.metrics.health.failed("OpenSearch", f"refuses writes ({kind.value}): {reason}")
        state = {
            "kind": kind.value,
            "reason": reason,
            "since_ms": self._blocked_since,
            "consumer": self.deps.me,
        }
        # outlives the longest backoff between two retries, so it stays while retrying
        ttl_ms = int((2 * settings.retry_max_backoff + settings.lease_ttl_seconds) * 1000)
        await self.store.set_blocked(self.partition, json.dumps(state), ttl_ms)
        if self.deps.gate.due(kind.value, self.clock.monotonic()):
            log.error(
                "OpenSearch refuses writes (%s): %s. Retrying with backoff; nothing is "
                "dead-lettered, the index falls behind until this is fixed: %s",
                kind.value,
                reason,
                _FIXES[kind],
            )

    async def _unblock(self) -> None:
        since = self._blocked_since
        self._blocked_since = None
        await self.store.clear_blocked(self.partition)
        if since is not None:
            log.warning(
                "OpenSearch accepts writes to partition p%d again (blocked for %.0fs)",
                self.partition,
                (self.clock.time() * 1000 - since) / 1000,
            )

    async def _fence(self, sent: Sequence[bytes] = ()) -> None:
        """Check the lease right before a write, marking the entries in ``sent`` as in
        flight (consumer.attempts). Raises :class:`LeaseLost`."""
        if not await self.store.fence(self.partition, self._token, sent):
            self.deps.metrics.errors.labels("fenced").inc()
            log.warning(
                "Lost the lease of partition p%d; leaving it to its new owner", self.partition
            )
            raise LeaseLost

    async def _close_attempts(self, sent: Sequence[bytes]) -> None:
        """Clear the in-flight marks of a request that failed as a whole, not through its
        entries' fault (consumer.attempts)."""
        await self.store.settle(self.partition, [], 0, sent=sent)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds; raise :class:`Abandoned` if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            raise Abandoned

    # acknowledging

    async def _settle(
        self,
        batch: Batch,
        *,
        final: bool,
        sent: Sequence[bytes] = (),
        charged: Sequence[bytes] = (),
    ) -> None:
        """Write letters, XACK settled entries, the attempts of the bulk just answered
        (``sent``, of which ``charged`` failed), and (``final``) the applied frontier."""
        entries = batch.take_settled()
        letters = batch.take_letters()
        progress = batch.progress_id if final else None
        changes = sum(entry.changes for entry in entries)
        acked = [entry.id for entry in entries]
        strays = await self.store.settle(
            self.partition,
            acked,
            changes,
            letters,
            sent=sent,
            charged=charged,
            check_below=progress,
            check_count=self.deps.settings.max_batch_size,
            floor=floor_of(entries),
        )
        self.in_hand = max(self.in_hand - changes, 0)
        metrics = self.deps.metrics
        now = self.clock.time()
        if entries:
            metrics.health.progressed()
        for entry in entries:
            if entry.ts:
                # per change (every change of an entry has its ts), as events are counted;
                # a marker (no changes) is one observation, so an idle stream still shows
                # its latency through progress entries
                age = max(now - entry.ts / 1000, 0.0)
                metrics.latency.observe(age, max(entry.changes, 1))
        if letters:
            metrics.errors.labels("dead_letter").inc(len(letters))
            log_letters(letters)
        if final:
            metrics.events.labels("upsert").inc(batch.superseded_upserts)
            metrics.events.labels("delete").inc(batch.superseded_deletes)
            if batch.below_floor:
                # counted above with the superseded changes, as the events metric says
                log.debug(
                    "Settled %d changes of p%d below the snapshot at ts=%s without sending them",
                    batch.below_floor,
                    self.partition,
                    batch.floor,
                )
            for ts in batch.reconcile_ts:
                log.info("Reconcile marker for the snapshot at ts=%d on p%d", ts, self.partition)
        if progress is not None and batch.progress_ts is not None:
            await self._advance(batch.progress_ts, progress, strays)

    async def _advance(self, ts: int, progress: bytes, strays: list[bytes]) -> None:
        """Write the frontier ``ts`` of the progress entry ``progress`` once nothing is
        pending below it; ``strays`` are the ids the acknowledging pipeline found there.

        Every entry below ``progress`` was delivered before it (XREADGROUP hands
        entries out in id order), so once none is pending, all of them are
        settled and the frontier is true whoever writes it. Strays are taken over
        and settled first. Asked to stop meanwhile, the frontier stays where it is
        (the next owner takes them over on its takeover). Raises
        redis.exceptions.RedisError, :class:`LeaseLost`.
        """
        while strays:
            if self.stopping.is_set() or not await self._take_over(strays):
                return
            strays = await self.store.pending_below(
                self.partition, progress, self.deps.settings.max_batch_size
            )
        await self.store.advance(self.partition, ts)
        self._checked_at = self.clock.monotonic()
        self.deps.metrics.applied_through(self.partition, ts)

    async def _take_over(self, ids: list[bytes]) -> bool:
        """Claim the pending entries ``ids`` (XCLAIM) and settle them.

        False when none could be claimed (settled by their holder after all, or
        trimmed away, which XCLAIM drops from the pending list): the caller then
        leaves its frontier for the next progress entry rather than loop. Raises
        redis.exceptions.RedisError, :class:`LeaseLost`.
        """
        # a runner paused past its own lease must not take entries from the new owner
        await self._fence()
        await self._recover_attempts()
        entries = await self.store.claim_ids(self.partition, ids)
        if not entries:
            return False
        log.warning(
            "Took over %d entries of partition p%d left pending by a consumer that no longer "
            "works on them (%s..%s)",
            len(entries),
            self.partition,
            entries[0].id.decode(),
            entries[-1].id.decode(),
        )
        await self._process(await self._batch_of(entries))
        return True


def _layout_message(results: Sequence[ItemResult], verdicts: Round[Item]) -> str:
    """The human message for the first per-item answer that says the alias is wrong."""
    for result in results:
        message = layout_problem(result.status, result.error_type, result.reason)
        if message is not None:
            return message
    return f"OpenSearch cannot write through the alias: {verdicts.layout}"
