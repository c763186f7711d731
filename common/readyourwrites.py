"""Read-your-writes: wait until a Materialize timestamp is searchable in OpenSearch.

An application that changed data and wants to show search results that include it
calls :func:`wait_searchable` with the change's Materialize timestamp ``ts`` (or
the view's current one, ``SELECT mz_now()``; ``searchsync wait --now``). Two
things must hold:

1. **Applied**: every partition's applied frontier (``applied`` hash, field
   ``p<N>``, written from progress entries by consumer.acks) is above ``ts``. A
   frontier F means every change below F is in OpenSearch, so a change at ``ts``
   is in once F > ts. The producer writes progress entries to every partition
   (PROGRESS_INTERVAL_MS), so quiet partitions move too.
2. **Searchable**: a refresh of every shard copy behind the alias has *started*
   after (1) was seen. GET by id is real time (it reads the translog), ``_search``
   sees only what the last refresh published. ``_stats/refresh`` gives, per copy,
   ``external_total`` (finished refreshes that publish to search) and their total
   time. Refreshes of one copy run one after another, so a copy is covered when
   two have finished since (1), or one has finished since and it started after
   (1): it finished after the last poll that still saw the old count and took the
   growth of the total time, so it started no earlier than that poll minus its
   duration (:func:`refresh_covered`). Under load that is the next scheduled
   refresh, within ``refresh_interval``.

   Why not ``POST _refresh`` on every call: under load every call would cut a new
   segment (many small segments, merge pressure), while the index refreshes itself
   every ``refresh_interval`` anyway (the project sets it explicitly, 1 s, so
   "search idle" never skips it). But the schedule skips a copy whose searcher is
   already current (nothing new to publish): then no counter moves. When a copy is
   not covered within ``refresh_interval`` plus three mean refresh times (at least
   0.25 s), one ``_refresh`` is forced. That happens on quiet indexes, where it
   publishes nothing or very little, or when the interval is ``-1``.

A change the consumers dead-lettered (``searchsync dlq list``) counts as applied:
the frontier passes it although its document is not in the index.

:func:`frontier_behind`, :func:`refresh_covered` and :func:`force_after` are the
pure decisions (unit-tested); :func:`wait_searchable` does the I/O.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgspec
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from . import partition_state
from .keys import Keys

__all__ = [
    "Behind",
    "CopyRefresh",
    "WaitResult",
    "force_after",
    "frontier_behind",
    "parse_interval",
    "refresh_covered",
    "wait_searchable",
]

POLL_SECONDS: Final = 0.05
# _stats is a broadcast to every shard: polled at most this often per caller
STATS_POLL_SECONDS: Final = 0.1
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(nanos|micros|ms|s|m|h|d)?$")
_UNIT_SECONDS: Final = {
    "nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip


class Behind(msgspec.Struct, frozen=True):
    """A partition whose frontier has not passed ``ts``; ``behind_ms`` = ts + 1 - applied
    (None when the partition has no frontier yet)."""

    partition: int
    applied_ts: int | None
    behind_ms: int | None


class WaitResult(msgspec.Struct, frozen=True):
    """``ok``: every change at or below ``ts`` is searchable. ``refresh``: "observed"
    (the index refreshed by itself), "forced" (one ``_refresh`` was issued) or
    "pending" (timed out waiting for it)."""

    ok: bool
    ts: int
    waited_seconds: float
    applied: dict[str, int | None]
    behind: list[Behind]
    refresh: str | None


def frontier_behind(applied: Mapping[int, int | None], partitions: int, ts: int) -> list[Behind]:
    """The partitions whose applied frontier is not above ``ts`` (frontier F covers ts < F)."""
    out: list[Behind] = []
    for n in range(partitions):
        frontier = applied.get(n)
        if frontier is None or frontier <= ts:
            out.append(Behind(n, frontier, None if frontier is None else ts + 1 - frontier))
    return out


class CopyRefresh(NamedTuple):
    """One shard copy's finished external refreshes and their total time (ms)."""

    refreshes: int
    millis: int


def refresh_covered(
    before: Mapping[str, CopyRefresh],
    now: Mapping[str, CopyRefresh],
    unchanged_at: Mapping[str, float],
    applied_at: float,
) -> bool:
    """Every shard copy seen ``before`` has finished a refresh that started after
    ``applied_at`` (a monotonic time).

    ``unchanged_at[copy]`` is when the last poll that still saw ``before``'s count
    was sent (the refresh that moved it finished later). Two refreshes finished
    since ``before``: the second started after the first ended, after
    ``applied_at``. One: it started at the earliest ``unchanged_at`` minus its
    duration (the growth of the total time, plus 1 ms for the rounding to ms). A
    copy gone from ``now`` (relocating) is not covered; a new copy is not waited for.
    """
    for copy, then in before.items():
        current = now.get(copy)
        if current is None:
            return False
        if current.refreshes >= then.refreshes + 2:
            continue
        took = (current.millis - then.millis + 1) / 1000
        if current.refreshes == then.refreshes + 1 and unchanged_at[copy] - took >= applied_at:
            continue
        return False
    return True


def force_after(interval_seconds: float, mean_refresh_seconds: float) -> float:
    """Seconds after the frontier passed to stop waiting for the schedule and force one
    refresh: a scheduled refresh is due within the interval and takes about the mean
    refresh time; no schedule (``-1``): at once."""
    if interval_seconds < 0:
        return 0.0
    return interval_seconds + max(0.25, 3 * mean_refresh_seconds)


def parse_interval(text: str) -> float:
    """An OpenSearch time value (``1s``, ``500ms``, ``-1``) in seconds; -1 for none."""
    value = text.strip()
    if value.startswith("-"):
        return -1.0
    match = _INTERVAL.fullmatch(value)
    if not match:
        raise ValueError(f"not a time value: {text!r}")
    return float(match[1]) * _UNIT_SECONDS[match[2] or "ms"]


async def read_applied(redis: Redis, keys: Keys) -> dict[int, int | None]:
    """The applied frontier per partition (one GET each, one round trip). Raises redis
    errors."""
    raw = await partition_state.read_applied(redis, keys)
    return {n: _int(raw.get(keys.partition_name(n).encode())) for n in range(keys.partitions)}


def _int(value: bytes | None) -> int | None:
    return int(value) if value is not None else None


async def refresh_stats(
    client: AsyncOpenSearch, alias: str
) -> tuple[dict[str, CopyRefresh], float]:
    """Finished external refreshes per shard copy (``index/shard/node``) and the mean
    refresh time in seconds. One request. Raises opensearchpy.TransportError."""
    stats: Any = await client.indices.stats(index=alias, metric="refresh", level="shards")
    copies: dict[str, CopyRefresh] = {}
    for name, index in stats.get("indices", {}).items():
        for shard, found in index.get("shards", {}).items():
            for copy in found:
                refresh = copy.get("refresh", {})
                node = copy.get("routing", {}).get("node", "?")
                copies[f"{name}/{shard}/{node}"] = CopyRefresh(
                    int(refresh.get("external_total", refresh.get("total", 0))),
                    int(refresh.get("external_total_time_in_millis", 0)),
                )
    total = sum(c.refreshes for c in copies.values())
    millis = sum(c.millis for c in copies.values())
    return copies, (millis / total / 1000 if total else 0.0)


async def refresh_interval(client: AsyncOpenSearch, alias: str) -> float:
    """The longest ``index.refresh_interval`` behind ``alias``, in seconds (-1: none).
    One request. Raises opensearchpy.TransportError."""
    reply: Any = await client.indices.get_settings(
        index=alias, name="index.refresh_interval", include_defaults=True
    )
    found: list[float] = []
    for index in reply.values():
        for part in ("settings", "defaults"):
            value = index.get(part, {}).get("index", {}).get("refresh_interval")
            if value is not None:
                found.append(parse_interval(value))
                break
    return -1.0 if any(v < 0 for v in found) else max(found, default=1.0)


async def wait_searchable(
    redis: Redis,
    opensearch: AsyncOpenSearch,
    keys: Keys,
    alias: str,
    ts: int,
    *,
    timeout_seconds: float,
    poll: float = POLL_SECONDS,
) -> WaitResult:
    """Wait until every change at or below ``ts`` is applied and searchable through
    ``alias`` (module docstring), at most ``timeout_seconds``.

    Returns a :class:`WaitResult` (``ok`` False on timeout: ``behind`` names the
    partitions, or ``refresh`` is "pending"). Costs one HGETALL per ``poll`` while
    waiting for the frontier, then one ``_stats/refresh`` every 0.1 s (and at most
    one ``_refresh``). Raises redis.exceptions.RedisError and
    opensearchpy.TransportError when a service cannot be reached.
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    while True:
        applied = await read_applied(redis, keys)
        applied_at = time.monotonic()
        behind = frontier_behind(applied, keys.partitions, ts)
        if not behind or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll)
    shown = {keys.partition_name(n): value for n, value in applied.items()}
    if behind:
        return WaitResult(False, ts, time.monotonic() - started, shown, behind, None)
    refresh = await _until_refreshed(opensearch, alias, applied_at, deadline, poll)
    waited = time.monotonic() - started
    return WaitResult(refresh != "pending", ts, waited, shown, [], refresh)


async def _until_refreshed(
    client: AsyncOpenSearch, alias: str, applied_at: float, deadline: float, poll: float
) -> str:
    """The refresh outcome: "observed", "forced" or "pending" (see :class:`WaitResult`)."""
    sent = time.monotonic()
    before, mean = await refresh_stats(client, alias)
    unchanged_at = dict.fromkeys(before, sent)
    force_at = applied_at + force_after(await refresh_interval(client, alias), mean)
    while True:
        sent = time.monotonic()
        now, _ = await refresh_stats(client, alias)
        if refresh_covered(before, now, unchanged_at, applied_at):
            return "observed"
        for copy, then in before.items():
            if copy in now and now[copy].refreshes == then.refreshes:
                unchanged_at[copy] = sent
        moment = time.monotonic()
        if moment >= force_at:
            await client.indices.refresh(index=alias)
            return "forced"
        if moment >= deadline:
            return "pending"
        await asyncio.sleep(max(poll, STATS_POLL_SECONDS))
