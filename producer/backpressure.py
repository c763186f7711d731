"""Backpressure: pause the SUBSCRIBE stream while consumers are too far behind.

The buffer is what CONSUMER_GROUP has not acknowledged yet, in changes, summed over
partitions (common.buffer). :class:`Hysteresis` is the pure state machine — above
BACKPRESSURE_THRESHOLD pause, below BACKPRESSURE_RESUME resume, in between keep
the current state — and :class:`BufferMonitor` polls Redis, drives it, logs the
runbook's lines and exposes ``paused``/``resumed`` events the reader waits on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..common.buffer import BufferReading, group_info, outstanding_changes
from ..common.cancellation import raise_if_cancelled
from ..common.keys import Keys
from ..common.partition_state import merge_counts, queue_counts
from ..common.streams import ensure_groups
from .metrics import ProducerMetrics
from .ports import Backpressure

__all__ = [
    "POLL_SECONDS",
    "BufferMonitor",
    "BufferReading",
    "Hysteresis",
    "buffer_reading",
    "read_buffer",
    "wait_out",
]

log = logging.getLogger("searchsync.producer.backpressure")

# How often the buffer is measured: one pipelined round trip of 1 + STREAM_PARTITIONS
# cheap commands; well under the time a FETCH batch takes to reach consumers.
POLL_SECONDS: Final = 0.25

Transition = Literal["activated", "released"]
Waited = Literal["resumed", "stopped", "timed out"]


@dataclass(slots=True)
class Hysteresis:
    threshold: int
    resume: int
    active: bool = False

    def __post_init__(self) -> None:
        if self.resume >= self.threshold:
            raise ValueError("resume must be below threshold")

    def observe(self, buffer: int) -> Transition | None:
        """Feed one measurement; return the transition it caused, if any."""
        if not self.active and buffer > self.threshold:
            self.active = True
            return "activated"
        if self.active and buffer < self.resume:
            self.active = False
            return "released"
        return None


async def read_buffer(redis: Redis, keys: Keys, group: str) -> int:
    """Changes written but not acknowledged by ``group``, over all partitions (see
    :func:`read_buffers`)."""
    return (await read_buffers(redis, keys, group)).total


async def read_buffers(redis: Redis, keys: Keys, group: str) -> BufferReading:
    """Changes written but not acknowledged by ``group``, per partition
    (common.buffer.outstanding_changes, the figure ``searchsync status`` shows), and
    the length of the dead-letter stream.

    One round trip (HGETALL counts per partition + XLEN dlq + XINFO GROUPS and XLEN per stream). A
    stream or group that does not exist yet is created. Raises redis
    ConnectionError/TimeoutError when Redis is unreachable.
    """
    async with redis.pipeline(transaction=False) as pipe:
        queue_counts(pipe, keys)
        pipe.xlen(keys.dlq)
        for stream in keys.streams():
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
        replies = await pipe.execute(raise_on_error=False)
    partitions = keys.partitions
    merged = [merge_counts(replies[:partitions]), *replies[partitions:]]
    reading, missing = buffer_reading(merged, partitions, group)
    if missing:
        await ensure_groups(redis, keys, group)
    return reading


def buffer_reading(
    replies: Sequence[Any], partitions: int, group: str
) -> tuple[BufferReading, bool]:
    """Pure: the reading from :func:`read_buffers`' pipeline replies (errors as
    objects), and whether a stream or the group is missing. Raises the first error
    reply other than a missing stream's."""
    counts: dict[bytes, bytes] = replies[0] if isinstance(replies[0], dict) else {}
    if isinstance(replies[1], Exception):
        raise replies[1]
    buffers: list[int] = []
    missing = False
    for partition in range(partitions):
        groups, length = replies[2 + 2 * partition : 4 + 2 * partition]
        if isinstance(groups, ResponseError):
            groups = None  # "no such key": nothing written to this partition yet
        for reply in (groups, length):
            if isinstance(reply, Exception):
                raise reply
        info = group_info(groups, group)
        missing = missing or info is None
        buffers.append(outstanding_changes(counts, partition, info, int(length)))
    return BufferReading(tuple(buffers), int(replies[1])), missing


async def wait_out(
    gate: Backpressure,
    stop: asyncio.Event,
    limit: float | None = None,
    *,
    stop_wait: asyncio.Task[Any] | None = None,
) -> Waited:
    """Wait until backpressure is released or ``stop`` is set, at most ``limit``
    seconds (None: no limit). The one wait of every reader (SUBSCRIBE session,
    poller, the service between sessions).

    Returns "stopped" when ``stop`` is set (checked first, also at once), "resumed"
    when backpressure is not active (at once if it is not), else "timed out".
    ``stop_wait``: a task of the caller's that already waits for ``stop`` (left
    running), instead of a new one. Raises nothing of its own.
    """
    if stop.is_set():
        return "stopped"
    if not gate.active:
        return "resumed"
    resumed = asyncio.create_task(gate.wait_until_resumed())
    stopped = stop_wait if stop_wait is not None else asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {resumed, stopped}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        resumed.cancel()
        if stopped is not stop_wait:
            stopped.cancel()
    if stop.is_set():
        return "stopped"
    return "resumed" if done else "timed out"


class BufferMonitor:
    """Measures the buffer every :data:`POLL_SECONDS` and pauses/resumes the reader.

    Run :meth:`run` as a task; the reader awaits :meth:`wait_until_resumed` before
    every FETCH. Measurement failures are logged and retried (the reader notices a
    dead Redis itself); the state stays as it was meanwhile.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        group: str,
        threshold: int,
        resume: int,
        log_seconds: float,
        metrics: ProducerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._state = Hysteresis(threshold, resume)
        self._log_seconds = log_seconds
        self._metrics = metrics if metrics is not None else ProducerMetrics.unserved()
        self._clock = clock
        self._running = asyncio.Event()
        self._running.set()
        self.buffer = 0

    @property
    def active(self) -> bool:
        return self._state.active

    async def wait_until_resumed(self) -> None:
        """Return at once unless backpressure is active; then when it is released."""
        await self._running.wait()

    async def measure(self) -> int:
        """One measurement, applied to the state machine; returns the buffer."""
        reading = await read_buffers(self._redis, self._keys, self._group)
        buffer = reading.total
        self.buffer = buffer
        transition = self._state.observe(buffer)
        if transition == "activated":
            self._running.clear()
            log.warning("Buffer size exceeds threshold: %d events", buffer)
            log.warning("Backpressure activated: pausing SUBSCRIBE stream")
            # the runbook's "Unhealthy State" line for the same moment, for alerts on ERROR
            log.error("Buffer overflow: %d events pending (backpressure activated)", buffer)
        elif transition == "released":
            self._running.set()
            log.info("Backpressure released: resuming SUBSCRIBE stream (buffer %d events)", buffer)
        self._metrics.measured(reading, paused=self._state.active)
        return buffer

    async def run(self) -> None:
        """Measure forever (until cancelled), logging the buffer every BUFFER_LOG_SECONDS."""
        next_log = self._clock() + self._log_seconds
        while True:
            try:
                await self.measure()
            except Exception as error:  # Redis down: the writer reports and reconnects
                log.debug("Buffer measurement failed: %s", error)
                self._metrics.health.failed("Redis", str(error) or type(error).__name__)
            raise_if_cancelled()  # redis-py may have swallowed it (common.cancellation)
            now = self._clock()
            if now >= next_log:
                state = "active" if self._state.active else "inactive"
                log.info("Buffer size: %d events (backpressure: %s)", self.buffer, state)
                next_log = now + self._log_seconds
            await asyncio.sleep(POLL_SECONDS)
