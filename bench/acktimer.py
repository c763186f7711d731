"""Per change: its Materialize timestamp → in Redis → acknowledged, read from Redis alone.

Every stream entry carries its changes' Materialize timestamp (``ts``, epoch ms: the
emulator's ticks are wall-clock milliseconds) and its id carries the time the
producer's XADD reached Redis. An entry is acknowledged once the consumer group has
delivered it (XINFO GROUPS: last-delivered-id) and it is no longer pending (below the
lowest id of XPENDING's summary; consumers acknowledge a partition's entries in
order). :class:`AckTimer` reads the new entries (XRANGE) and both answers every
``interval`` seconds, one pipeline for all partitions, and gives each change three
figures:

- ``ts → acknowledged``: what the pipeline added after Materialize closed the
  timestamp, plus the emulator's own delay in handing the row out;
- ``arrival → acknowledged`` (when ``arrivals`` names bench.arrivals' file): from the
  first row of the change's timestamp reaching the producer (the tap in front of
  the emulator stamps it) to acknowledged — the pipeline-added latency itself;
- ``ts → in Redis``: the producer's part (reading, consolidating until the
  timestamp is complete, XADD);
- ``in Redis → acknowledged``: the consumers' part (read, bulk, OpenSearch, XACK).

Each is late by at most one ``interval`` (the poll that saw it). Entries
redelivered after a crash would be counted twice by the consumers: the bench
kills nothing, and it assumes one consumer group (``group``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from bench.arrivals import read_arrivals
from searchsync.common.entries import Marker, decode_entry
from searchsync.common.keys import Keys

__all__ = ["AckTimer", "acknowledged_below", "weighted_percentiles_ms"]


@dataclass(slots=True)
class _Entry:
    key: tuple[int, int]  # the entry id as numbers, for comparing ids
    changes: int
    ts_ms: int


@dataclass
class _Partition:
    last_id: bytes
    waiting: list[_Entry] = field(default_factory=list)


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def acknowledged_below(
    last_delivered: bytes | str, pending: int, lowest_pending: bytes | str | None
) -> tuple[tuple[int, int], bool]:
    """Entries up to this id are acknowledged; the flag says whether the id itself is."""
    if pending and lowest_pending is not None:
        return id_key(lowest_pending), False
    return id_key(last_delivered), True


@dataclass
class AckTimer:
    """Start with :meth:`start` (from now on), :meth:`run` as a task, read the lists."""

    redis: Redis
    keys: Keys
    group: str = "searchsync"
    interval: float = 0.01
    ts_to_ack: list[tuple[float, int]] = field(default_factory=list)  # (seconds, changes)
    ts_to_redis: list[tuple[float, int]] = field(default_factory=list)
    redis_to_ack: list[tuple[float, int]] = field(default_factory=list)
    # with ``arrivals`` (bench.arrivals' file): the row's arrival at the producer →
    # acknowledged, the pipeline-added latency itself
    arrivals: str | None = None
    arrival_to_ack: list[tuple[float, int]] = field(default_factory=list)
    without_arrival: int = 0  # changes whose timestamp the tap never saw (none expected)
    _partitions: list[_Partition] = field(default_factory=list)
    _arrived: dict[int, float] = field(default_factory=dict)
    _arrivals_read: int = 0

    async def start(self) -> None:
        """Time only what is written from now on: remember where each stream ends."""
        self._partitions = []
        for partition in range(self.keys.partitions):
            last = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self.redis.xrevrange(self.keys.stream(partition), count=1),
            )
            self._partitions.append(_Partition(last[0][0] if last else b"0-0"))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        for number, partition in enumerate(self._partitions):
            await self._read_new(number, partition)
        async with self.redis.pipeline(transaction=False) as pipe:
            for number in range(self.keys.partitions):
                pipe.xinfo_groups(self.keys.stream(number))
                pipe.xpending(self.keys.stream(number), self.group)
            answers = await pipe.execute(raise_on_error=False)
        now = time.time()
        if self.arrivals is not None:
            self._arrivals_read = read_arrivals(self.arrivals, self._arrivals_read, self._arrived)
        for number, partition in enumerate(self._partitions):
            groups, pending = answers[2 * number], answers[2 * number + 1]
            if isinstance(groups, Exception) or isinstance(pending, Exception):
                continue  # no stream or no group yet
            ours = [g for g in groups if _text(g["name"]) == self.group]
            if not ours:
                continue
            upto, inclusive = acknowledged_below(
                ours[0]["last-delivered-id"], pending["pending"], pending["min"]
            )
            while partition.waiting and (
                partition.waiting[0].key < upto or (inclusive and partition.waiting[0].key == upto)
            ):
                entry = partition.waiting.pop(0)
                xadd_s = entry.key[0] / 1000
                self.ts_to_ack.append((now - entry.ts_ms / 1000, entry.changes))
                self.ts_to_redis.append((xadd_s - entry.ts_ms / 1000, entry.changes))
                self.redis_to_ack.append((now - xadd_s, entry.changes))
                if self.arrivals is not None:
                    arrived = self._arrived.get(entry.ts_ms)
                    if arrived is None:
                        self.without_arrival += entry.changes
                    else:
                        self.arrival_to_ack.append((now - arrived, entry.changes))

    async def _read_new(self, number: int, partition: _Partition) -> None:
        stream = self.keys.stream(number)
        rows = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await self.redis.xrange(stream, min=b"(" + partition.last_id, count=10_000),
        )
        for entry_id, fields in rows:
            partition.last_id = entry_id
            decoded = decode_entry(fields)
            if isinstance(decoded, Marker) or not decoded:
                continue
            partition.waiting.append(_Entry(id_key(entry_id), len(decoded), decoded[0].ts))

    @property
    def unacknowledged(self) -> int:
        return sum(len(p.waiting) for p in self._partitions)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def weighted_percentiles_ms(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """p50/p95/p99 (ms) over changes: each sample counts as many times as its changes."""
    total = sum(count for _, count in samples)
    if total == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "changes": 0}
    ordered = sorted(samples)
    result: dict[str, Any] = {"changes": total}
    quantiles = [(f"q{q}", q / 100) for q in range(101)]
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99), *quantiles):
        rank, seen = q * total, 0
        for seconds, count in ordered:
            seen += count
            if seen >= rank:
                result[name] = round(seconds * 1000, 1)
                break
    # the CDF at every percent, for bench.report's plots
    result["cdf_ms"] = [result.pop(name) for name, _ in quantiles]
    return result
