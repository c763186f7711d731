"""One partition, while this consumer holds its lease: read, send, settle, repeat.

A runner first takes over and finishes the partition's pending entries, then
reads new ones. After an error it starts over from the pending entries; which of
them count a delivery against MAX_DELIVERIES is decided in one place,
:meth:`PartitionRunner._drain_pending`. Batches of one partition are strictly
sequential (one bulk in flight per partition): a batch is settled completely,
including retries, before the next is read, which keeps per-key order. Different
partitions run concurrently.

Entries can also become pending behind the runner's back, after its takeover: a
previous owner paused past its lease (GC pause, SIGSTOP, slow host) may do one
more XREADGROUP ``>`` before its fence stops it, and leaves those entries pending
under its name, where no read of ``>`` ever sees them again. Two checks find
such strays and take them over (counting a delivery: it is a takeover):

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

A runner ends when asked to stop (after settling the batch in hand), when its
lease is gone (without acknowledging anything more: the next owner re-delivers),
or when a stop arrives while it is waiting to retry (the batch stays pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.config import Settings
from common.keys import Keys
from consumer.acks import Acker
from consumer.batch import Batch, Item, RawEntry, chunked, entries_to_read, should_flush
from consumer.bulk import ItemResult
from consumer.deadletters import log_letters
from consumer.leases import Leases
from consumer.metrics import ConsumerMetrics
from consumer.outcomes import RequestVerdict, RetryPolicy, judge
from consumer.reader import (
    claim_ids,
    claim_pending,
    held_below,
    pending_below,
    pending_count,
    read_held,
    read_new,
)
from consumer.sender import BulkFailed, BulkSender

__all__ = ["PartitionRunner", "RunnerDeps"]

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The partition's lease is no longer ours: stop without acknowledging."""


class Abandoned(Exception):
    """Asked to stop while waiting to retry: leave the batch pending for the next owner."""


@dataclass(frozen=True, slots=True)
class RunnerDeps:
    """What every runner of one consumer shares."""

    settings: Settings
    redis: Redis
    keys: Keys
    group: str
    me: str
    leases: Leases
    acker: Acker
    sender: BulkSender
    metrics: ConsumerMetrics
    policy: RetryPolicy


class PartitionRunner:
    def __init__(self, deps: RunnerDeps, partition: int) -> None:
        self.deps = deps
        self.partition = partition
        self.stream = deps.keys.stream(partition)
        self.stopping = asyncio.Event()
        self.in_hand = 0  # changes read and not yet acknowledged
        # Pending entries this runner already holds, delivery counted, as an XPENDING
        # bound: ids below it (reader.held_below). None: nothing held yet, or the runner
        # failed on what it held, which then counts again.
        self._held_below: bytes | None = None
        # monotonic time of the last check that nothing pending escaped this runner
        self._checked_at = time.monotonic()
        # changes per entry in the last read: sizes the next read (batch.entries_to_read)
        self._changes_per_entry = 1.0

    @property
    def _redis(self) -> Redis:
        return self.deps.redis

    async def run(self) -> None:
        """Work the partition until stopped, fenced off, or abandoned. Never raises."""
        backoff = self.deps.policy.backoff()
        while not self.stopping.is_set():
            try:
                await self._drain_pending()
                while not self.stopping.is_set():
                    await self._sweep_strays()
                    batch = await self._next_batch()
                    if batch is not None:
                        await self._process(batch)
                        backoff.reset()
                return
            except (LeaseLost, Abandoned):
                return
            except RedisError as error:
                # not the entries' fault: what is held is re-read without counting a delivery
                delay = backoff.next_delay()
                log.warning(
                    "Redis error on partition p%d, retrying in %.1fs: %s",
                    self.partition,
                    delay,
                    error,
                )
            except Exception:
                # maybe the entries' fault: they are taken over again, counting a delivery
                # each, so an entry that always breaks the runner ends in the dlq
                self._held_below = None
                delay = backoff.next_delay()
                log.exception("Partition p%d failed, retrying in %.1fs", self.partition, delay)
            finally:
                self.in_hand = 0
            with contextlib.suppress(Abandoned):
                await self._pause(delay)

    # reading

    async def _drain_pending(self) -> None:
        """Settle every pending entry of the partition, oldest first, before reading new ones.

        The one place that decides which entries count a delivery. A delivery means
        a consumer took the entry and did not settle it because it, or its process,
        failed on it; after MAX_DELIVERIES of them the entry is a poison entry and
        goes to the dlq (consumer.batch). So:

        - entries this runner already holds (left pending by a Redis error) are
          read back as they are, not counted again: a flaky connection must not
          dead-letter valid entries;
        - everything else pending is taken over with XAUTOCLAIM, counting one
          delivery each: a previous owner's entries, a killed process's (even one
          with this consumer's name: a restart is a new runner), and all of them
          after this runner failed on its batch.

        Raises redis.exceptions.RedisError; entries stay pending either way.
        """
        if self._held_below is not None:
            await self._reread_held(self._held_below)
        await self._claim_all()

    async def _claim_all(self) -> None:
        """Take over every pending entry of the partition (XAUTOCLAIM, counting a delivery
        each), oldest first, and settle them. Raises redis.exceptions.RedisError."""
        cursor = b"0-0"
        while not self.stopping.is_set():
            cursor, entries = await claim_pending(
                self._redis,
                self.stream,
                self.deps.group,
                self.deps.me,
                self._entries_wanted(self.deps.settings.max_batch_size),
                cursor=cursor,
            )
            # whatever is left of the held ones was settled above: held = claimed so far
            self._held_below = held_below(cursor)
            if entries:
                log.info(
                    "Took over %d pending entries of partition p%d", len(entries), self.partition
                )
                await self._process(self._batch_of(entries))
            if cursor == b"0-0":
                self._checked_at = time.monotonic()
                return

    async def _sweep_strays(self) -> None:
        """Take over what is pending in the partition, if nothing was checked for a while.

        Runs between batches, when this runner has nothing in hand: any pending
        entry of the partition then is a stray (see the module docstring). Due
        when neither a takeover nor a progress entry's check (:meth:`_advance`)
        happened for LEASE_TTL_SECONDS, so with a live producer it costs nothing
        and otherwise one XPENDING per partition per LEASE_TTL_SECONDS. Raises
        redis.exceptions.RedisError, :class:`LeaseLost`.
        """
        if time.monotonic() - self._checked_at < self.deps.settings.lease_ttl_seconds:
            return
        self._checked_at = time.monotonic()
        strays = await pending_count(self._redis, self.stream, self.deps.group)
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

    async def _reread_held(self, below: bytes) -> None:
        """Settle the pending entries this runner holds below ``below``, oldest first."""
        after: bytes | None = b"-"
        while after is not None and not self.stopping.is_set():
            after, entries = await read_held(
                self._redis,
                self.stream,
                self.deps.group,
                self.deps.me,
                self._entries_wanted(self.deps.settings.max_batch_size),
                after=after,
                below=below,
            )
            if entries:
                log.info(
                    "Resuming %d pending entries of partition p%d after an error",
                    len(entries),
                    self.partition,
                )
                await self._process(self._batch_of(entries))

    def _batch_of(self, entries: Sequence[RawEntry]) -> Batch:
        batch = Batch(self.partition, self.deps.settings.max_deliveries, time.monotonic())
        for entry in entries:
            batch.add(entry)
        self._learn_entry_size(batch)
        return batch

    def _entries_wanted(self, room: int) -> int:
        return entries_to_read(room, self._changes_per_entry)

    def _learn_entry_size(self, batch: Batch) -> None:
        if batch.entries:
            self._changes_per_entry = max(1.0, batch.changes / len(batch.entries))

    async def _next_batch(self) -> Batch | None:
        """New entries up to the flush policy; None when a blocking read found nothing."""
        settings = self.deps.settings
        batch: Batch | None = None
        while True:
            want = self._entries_wanted(settings.max_batch_size - (batch.changes if batch else 0))
            entries = await read_new(
                self._redis,
                self.stream,
                self.deps.group,
                self.deps.me,
                want,
                block=batch is None,
            )
            if batch is None:
                if not entries:
                    return None
                batch = Batch(self.partition, settings.max_deliveries, time.monotonic())
            for entry in entries:
                batch.add(entry)
            self._learn_entry_size(batch)
            self.in_hand = batch.changes
            if should_flush(
                len(batch.entries),
                batch.changes,
                batch.age(time.monotonic()),
                drained=len(entries) < want,
                max_changes=settings.max_batch_size,
                max_age_s=settings.max_batch_age_seconds,
            ):
                return batch

    # sending

    async def _process(self, batch: Batch) -> None:
        """Send ``batch`` until every change is settled; acknowledge as items settle."""
        self.in_hand = batch.changes
        backoff = self.deps.policy.backoff()
        queue: deque[list[Item]] = deque()
        queue.extend(chunked(batch.items(), self.deps.settings.max_batch_size))
        while queue:
            items = queue.popleft()
            await self._fence()
            try:
                results = await self.deps.sender.send([item.change for item in items])
            except BulkFailed as failure:
                await self._request_failed(batch, items, failure, queue, backoff.next_delay())
                continue
            retry = self._judge(batch, items, results)
            await self._settle(batch, final=False)
            if retry:
                delay = backoff.next_delay()
                log.warning(
                    "OpenSearch bulk operation failed for %d of %d items, retrying in %.1fs",
                    len(retry),
                    len(items),
                    delay,
                )
                await self._pause(delay)
                queue.append(retry)
            else:
                backoff.reset()
        await self._settle(batch, final=True)

    def _judge(self, batch: Batch, items: list[Item], results: Sequence[ItemResult]) -> list[Item]:
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
        errors = verdicts.throttled + verdicts.failed + verdicts.rejected
        log.info("Synced %d documents, %d errors", len(verdicts.applied), errors)
        if errors:
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
        return verdicts.retry

    async def _request_failed(
        self,
        batch: Batch,
        items: list[Item],
        failure: BulkFailed,
        queue: deque[list[Item]],
        delay: float,
    ) -> None:
        self.deps.metrics.errors.labels("request").inc()
        if failure.verdict is RequestVerdict.SPLIT:
            # a rejected request names no item: halve it until the culprit is alone
            if len(items) > 1:
                middle = len(items) // 2
                queue.appendleft(items[middle:])
                queue.appendleft(items[:middle])
                return
            log.warning("OpenSearch bulk operation failed: %s", failure.reason)
            batch.dead_letter(items[0], f"request rejected: {failure.reason}")
            await self._settle(batch, final=False)
            return
        log.warning(
            "OpenSearch bulk operation failed: %s (retrying %d items in %.1fs)",
            failure.reason,
            len(items),
            delay,
        )
        await self._pause(delay)
        queue.appendleft(items)

    async def _fence(self) -> None:
        if not await self.deps.leases.fence(self.partition):
            self.deps.metrics.errors.labels("fenced").inc()
            log.warning(
                "Lost the lease of partition p%d; leaving it to its new owner", self.partition
            )
            raise LeaseLost

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds; raise :class:`Abandoned` if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            raise Abandoned

    # acknowledging

    async def _settle(self, batch: Batch, *, final: bool) -> None:
        """Write letters, XACK settled entries, and (``final``) the applied frontier."""
        entries = batch.take_settled()
        letters = batch.take_letters()
        progress = batch.progress_id if final else None
        changes = sum(entry.changes for entry in entries)
        strays = await self.deps.acker.settle(
            self.partition,
            [entry.id for entry in entries],
            changes,
            letters,
            check_below=progress,
            check_count=self.deps.settings.max_batch_size,
        )
        self.in_hand = max(self.in_hand - changes, 0)
        metrics = self.deps.metrics
        now = time.time()
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
        group = self.deps.group
        while strays:
            if self.stopping.is_set() or not await self._take_over(strays):
                return
            strays = await pending_below(
                self._redis, self.stream, group, progress, self.deps.settings.max_batch_size
            )
        await self.deps.acker.advance(self.partition, ts)
        self._checked_at = time.monotonic()
        self.deps.metrics.applied_through(self.partition, ts)

    async def _take_over(self, ids: list[bytes]) -> bool:
        """Claim the pending entries ``ids`` (XCLAIM, a delivery each) and settle them.

        False when none could be claimed (settled by their holder after all, or
        trimmed away, which XCLAIM drops from the pending list): the caller then
        leaves its frontier for the next progress entry rather than loop. Raises
        redis.exceptions.RedisError, :class:`LeaseLost`.
        """
        # a runner paused past its own lease must not take entries from the new owner
        await self._fence()
        entries = await claim_ids(self._redis, self.stream, self.deps.group, self.deps.me, ids)
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
        await self._process(self._batch_of(entries))
        return True
