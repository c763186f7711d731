"""Stream retention against real Redis: only acknowledged AND old entries are trimmed.

Uses the shared Redis under a test-only view name; keys are deleted afterwards.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from searchsync.common.entries import encode_changes
from searchsync.consumer.retention import trim
from tests.support.consumer import GROUP, Stack, running_worker, stack_fixture, wait_for

pytestmark = pytest.mark.timeout(60)


stack = stack_fixture(partitions=1)


async def fill(stack: Stack, old: int, young: int) -> tuple[list[bytes], list[bytes]]:
    stream = stack.keys.stream(0)
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    await stack.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    old_ids, young_ids = [], []
    async with stack.redis.pipeline(transaction=False) as pipe:
        for n in range(old):
            pipe.xadd(stream, encode_changes(n, [(b"k", None)]), id=f"{two_hours_ago}-{n}")  # type: ignore[arg-type]
        for n in range(young):
            pipe.xadd(stream, encode_changes(n, [(b"k", None)]))  # type: ignore[arg-type]
        ids = await pipe.execute()
    old_ids, young_ids = ids[:old], ids[old:]
    return old_ids, young_ids


async def ids_in(stack: Stack, stream: str) -> set[bytes]:
    rows: Any = await stack.redis.xrange(stream)
    return {entry_id for entry_id, _ in rows}


async def test_trims_acknowledged_old_entries_only(stack: Stack) -> None:
    stream = stack.keys.stream(0)
    old_ids, young_ids = await fill(stack, old=1000, young=300)
    # deliver the old ones; acknowledge all but the last 100 (still pending)
    await stack.redis.xreadgroup(GROUP, "c", {stream: ">"}, count=1000)
    await stack.redis.xack(stream, GROUP, *old_ids[:900])
    removed = await trim(stack.redis, stream, GROUP, retention_seconds=3600)
    assert removed > 0
    remaining = await ids_in(stack, stream)
    assert set(old_ids[900:]) <= remaining, "a pending entry was trimmed"
    assert set(young_ids) <= remaining, "an entry younger than the retention was trimmed"
    assert len(remaining) == 1300 - removed


async def test_unread_old_entries_are_kept(stack: Stack) -> None:
    stream = stack.keys.stream(0)
    old_ids, _ = await fill(stack, old=1000, young=0)
    await stack.redis.xreadgroup(GROUP, "c", {stream: ">"}, count=500)
    await stack.redis.xack(stream, GROUP, *old_ids[:500])
    await trim(stack.redis, stream, GROUP, retention_seconds=3600)
    remaining = await ids_in(stack, stream)
    assert set(old_ids[500:]) <= remaining, "an undelivered entry was trimmed"


async def test_young_acknowledged_entries_are_kept(stack: Stack) -> None:
    stream = stack.keys.stream(0)
    _, young_ids = await fill(stack, old=0, young=1000)
    await stack.redis.xreadgroup(GROUP, "c", {stream: ">"}, count=1000)
    await stack.redis.xack(stream, GROUP, *young_ids)
    assert await trim(stack.redis, stream, GROUP, retention_seconds=3600) == 0
    assert await stack.redis.xlen(stream) == 1000


async def test_the_dlq_keeps_letters_for_dlq_retention_seconds_only(stack: Stack) -> None:
    """Letters hold whole documents (names, emails, addresses): they are trimmed by age,
    read or not, by any running consumer."""
    now = int(time.time() * 1000)
    old = [f"{now - 8 * 86_400_000 + n}-0" for n in range(3)]  # eight days ago
    for entry_id in old:
        await stack.redis.xadd(stack.keys.dlq, {"ts": "1", "op": "u", "key": "k"}, id=entry_id)
    await stack.redis.xadd(stack.keys.dlq, {"ts": "2", "op": "u", "key": "recent"})
    async with running_worker(stack.settings()):  # DLQ_RETENTION_SECONDS: 7 days
        await wait_for(lambda: _dlq_length_is(stack, 1), 20, "old letters trimmed")
    rows: Any = await stack.redis.xrange(stack.keys.dlq)
    assert [fields[b"key"] for _, fields in rows] == [b"recent"]


async def _dlq_length_is(stack: Stack, length: int) -> bool:
    return int(await stack.redis.xlen(stack.keys.dlq)) == length
