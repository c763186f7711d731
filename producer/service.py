"""The producer process: the producer lease, then sessions in a loop, with backoff.

A producer first checks the stream layout (common.meta: exit 2 when its
STREAM_PARTITIONS or KEY_COLUMN disagree with the streams'), then waits for the
view's producer lease (producer.lease): a second producer of the view is a hot
standby and takes over within LEASE_TTL_SECONDS when the active one dies. Losing
the lease ends the session like a stop (what is in hand is written; the
checkpoint, fenced, refuses to move) and the producer stands by again.

Each session (SUBSCRIBE, or polling when USE_SUBSCRIBE=false) starts from the
checkpoint in Redis, so any failure — Materialize or Redis down, the connection
cut, the subscription killed for falling behind — is handled the same way:
log "SUBSCRIBE failed, retrying in Ns: …", wait (RETRY_INITIAL_BACKOFF ×
RETRY_BACKOFF_MULTIPLIER per failure, at most RETRY_MAX_BACKOFF, back to the
start once a session streams again), start over. A refused AS OF is not a
failure: the next session takes a snapshot at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

import psycopg

from ..common.backoff import Backoff
from ..common.cancellation import raise_if_cancelled
from ..common.config import EXIT_CONFIG, Settings
from ..common.errors import is_transient
from ..common.keys import Keys
from ..common.meta import StreamLayoutError, ensure_meta
from ..common.redis_client import connect_redis
from ..common.streams import ensure_groups
from .adapters import RedisDigestStore, open_poll_source, open_subscription
from .backpressure import BufferMonitor, wait_out
from .failures import AsOfRefused, describe
from .lease import ProducerFenced, ProducerLease
from .metrics import ProducerMetrics
from .polling import Poller
from .resume import plan_start
from .session import SubscribeSession
from .writer import StreamWriter

__all__ = ["EXIT_FATAL", "EXIT_OK", "run_producer"]

log = logging.getLogger("searchsync.producer")

EXIT_OK: Final = 0
EXIT_FATAL: Final = 1
# How long a stopping session may take to finish the batch in hand (SIGTERM must
# end the process within 5 s).
STOP_GRACE_SECONDS: Final = 3.0


async def run_producer(
    settings: Settings, stop: asyncio.Event, metrics: ProducerMetrics | None = None
) -> int:
    """Run until ``stop`` is set (returns 0) or a fatal error (logged, returns 1)."""
    if settings.use_subscribe and settings.discard_snapshot:
        log.warning(
            "DISCARD_SNAPSHOT=true: the snapshot is discarded and the checkpoint ignored; "
            "changes made while the producer was down are lost"
        )
    return await _Producer(settings, stop, metrics).run()


class _Producer:
    """The session loop: one session at a time, backoff between failures."""

    def __init__(
        self, settings: Settings, stop: asyncio.Event, metrics: ProducerMetrics | None
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.metrics = metrics if metrics is not None else ProducerMetrics.unserved()
        self.keys = Keys(settings.view_name, settings.stream_partitions)
        self.redis = connect_redis(settings, client_name=settings.producer_identity())
        self.lease = ProducerLease(
            self.redis, self.keys, settings.producer_identity(), settings.lease_ttl_seconds
        )
        self.writer = StreamWriter(
            self.redis,
            self.keys,
            progress_interval_ms=settings.progress_interval_ms,
            metrics=self.metrics,
            lease=lambda: self.lease.value,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        self.monitor = BufferMonitor(
            self.redis,
            self.keys,
            group=settings.consumer_group,
            threshold=settings.backpressure_threshold,
            resume=settings.backpressure_resume,
            log_seconds=settings.buffer_log_seconds,
            metrics=self.metrics,
        )
        self.backoff = Backoff.from_settings(
            settings.retry_initial_backoff,
            settings.retry_max_backoff,
            settings.retry_backoff_multiplier,
        )
        # Materialize refused the checkpoint's AS OF: snapshot until one is written
        self.refused = False
        self.session: SubscribeSession | Poller | None = None

    async def run(self) -> int:
        monitor_task: asyncio.Task[None] | None = None
        try:
            code = await self._check_layout()
            # only once the layout is ours: the monitor creates missing streams and groups
            # (a refused layout 1 view would get layout-2 streams beside its own)
            if code is None:
                monitor_task = asyncio.create_task(self.monitor.run())
            while code is None and not self.stop.is_set():
                if not await self.lease.lead(self.stop):
                    break
                code = await self._lead()
            return EXIT_OK if code is None else code
        finally:
            if monitor_task is not None:
                monitor_task.cancel()
                await asyncio.gather(monitor_task, return_exceptions=True)
            with contextlib.suppress(Exception):  # it expires on its own anyway
                await self.lease.release()
            await self.redis.aclose()
            log.info("Producer stopped")

    async def _check_layout(self) -> int | None:
        """searchsync.common.meta, retried while Redis is unreachable; EXIT_CONFIG on a mismatch."""
        while not self.stop.is_set():
            try:
                await ensure_meta(self.redis, self.keys, self.settings)
                return None
            except StreamLayoutError as error:
                log.error("Producer cannot start: %s", error)
                print(f"searchsync: configuration error: {error}", file=sys.stderr)
                return EXIT_CONFIG
            except Exception as error:
                if not is_transient(error):
                    raise
                await self._back_off(error, self.stop)
        return None

    async def _lead(self) -> int | None:
        """Sessions, one at a time, while the lease is ours. Returns an exit status to
        end the process with, or None: stopped, or the lease is lost (stand by)."""
        lost = asyncio.Event()
        # what sessions watch: a stop, or the lease gone
        halt = asyncio.Event()
        keeper = asyncio.create_task(self.lease.keep(lost))
        relay = asyncio.create_task(_when_any(halt, self.stop, lost))
        self.metrics.lead(True)
        try:
            while not halt.is_set():
                self.session = None
                try:
                    await _until_stopped(self._attempt(halt), halt, self._winds_down)
                    if isinstance(self.session, SubscribeSession) and self.session.ended_paused:
                        await wait_out(self.monitor, halt)
                except AsOfRefused as error:
                    self.refused = True
                    _log_refused(self.settings.view_name, error)
                    continue
                except ProducerFenced as error:
                    log.warning("Standing by: %s", error)
                    return None
                except Exception as error:
                    if not is_transient(error):
                        log.error("Producer cannot continue: %s", describe(error), exc_info=error)
                        return EXIT_FATAL
                    await self._back_off(error, halt)
                if isinstance(self.session, SubscribeSession) and self.session.snapshot_written:
                    self.refused = False
            return None
        finally:
            self.metrics.lead(False)
            keeper.cancel()
            relay.cancel()
            await asyncio.gather(keeper, relay, return_exceptions=True)

    async def _attempt(self, halt: asyncio.Event) -> None:
        """One session, from the checkpoint, until ``halt``. Raises what the session raises."""
        settings = self.settings
        await ensure_groups(self.redis, self.keys, settings.consumer_group)
        raise_if_cancelled()  # stopped meanwhile: redis-py may have swallowed it
        if not settings.use_subscribe:
            self.session = Poller(
                settings, self.writer, self.monitor, halt, open_source=open_poll_source,
                digests=RedisDigestStore(self.redis, self.keys, self.lease.value),
                metrics=self.metrics,
                on_streaming=self.backoff.reset,
            )  # fmt: skip
            await self.session.run()
            return
        # The polling fallback's digests are not kept up by SUBSCRIBE: drop them so a
        # later switch to polling starts with a full read (a key created and deleted
        # while polling was off would otherwise never be deleted).
        await self.redis.delete(self.keys.poll_keys, self.keys.poll_digests)
        checkpoint = await self.writer.read_checkpoint()
        high_water = await self.writer.read_high_water()
        raise_if_cancelled()  # stopped meanwhile: redis-py may have swallowed it
        plan = plan_start(
            checkpoint,
            discard_snapshot=settings.discard_snapshot,
            refused=self.refused,
            keeps_state=settings.subscribe_envelope == "diffs",
            high_water=high_water,
        )
        log.info("Producer start plan for %s: %s", settings.view_name, plan.reason)
        session = SubscribeSession(
            settings, self.writer, self.monitor, halt, open_rows=open_subscription,
            metrics=self.metrics, on_streaming=self.backoff.reset,
        )  # fmt: skip
        self.session = session
        await session.run(plan)

    def _winds_down(self) -> bool:
        return self.session is not None and self.session.watching_stop

    async def _back_off(self, error: Exception, halt: asyncio.Event) -> None:
        delay = self.backoff.next_delay()
        _log_failure(error, delay, self.metrics)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), delay)


async def _when_any(target: asyncio.Event, *sources: asyncio.Event) -> None:
    """Set ``target`` as soon as any of ``sources`` is set."""
    waits = [asyncio.create_task(source.wait()) for source in sources]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for wait in waits:
            wait.cancel()


def _log_refused(view: str, error: AsOfRefused) -> None:
    log.warning(
        "Materialize refused to resume %s from its checkpoint (%s): history before "
        "the checkpoint was compacted while the producer was away. Writing a fresh "
        "snapshot as upserts followed by a reconcile marker, which deletes documents "
        "the snapshot does not contain. Set RETAIN HISTORY on the view "
        "(ALTER MATERIALIZED VIEW … SET (RETAIN HISTORY FOR '1h')) to resume exactly "
        "instead.",
        view,
        error,
    )


async def _until_stopped(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, winds_down: Callable[[], bool]
) -> None:
    """Run ``work``; once ``stop`` is set, give it STOP_GRACE_SECONDS to finish on its
    own if ``winds_down()`` says it watches ``stop`` (a streaming session checkpoints
    what is in hand), else cancel it at once (connecting, declaring: nothing in hand)
    — so SIGTERM ends the process within 5 s. Raises what ``work`` raises.
    """
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and winds_down():
            await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if not task.done():
            if winds_down():
                log.warning("Stopping: abandoning a session that did not wind down in time")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        await task
    finally:
        stopped.cancel()


def _log_failure(error: Exception, delay: float, metrics: ProducerMetrics) -> None:
    if isinstance(error, psycopg.OperationalError) and "refused" in str(error).lower():
        log.error("Connection refused to Materialize")
    log.warning("SUBSCRIBE failed, retrying in %.1fs: %s", delay, describe(error))
    metrics.session_failed(error, describe(error))
