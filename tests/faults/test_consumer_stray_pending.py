"""Entries left pending by a consumer that no longer works on them are synced, and the
applied frontier never passes them.

A previous owner paused past its lease (GC pause, SIGSTOP, slow host) can do one
more XREADGROUP ``>`` before it notices that the lease is gone; its fence then
stops it before any bulk, and those entries stay pending under its name, after
the new owner drained the partition's pending list at its takeover. The new
owner must still get them into OpenSearch, and must not write a later progress
entry's frontier to ``applied`` while they are pending (status, verify and the
reconcile trust that frontier).

Real Redis and the devstack's OpenSearch node; consumers are ``python -m
consumer.main`` processes, frozen for real with SIGSTOP and woken with SIGCONT.
One partition, so every entry goes through the one lease that moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from searchsync.common.entries import PROGRESS, RECONCILE, encode_changes
from tests.support.consumer import GROUP, ConsumerProcess, Stack, orders, stack_fixture, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

# NEW sorts first: once both are alive again, the partition stays with NEW (consumer.membership)
OLD, NEW = "cons-old", "cons-new"
# comfortably more than READ_BLOCK_MS: a frozen consumer's blocking read has returned server-side
READ_BLOCK_PASSED = 0.5

Spawn = Callable[..., ConsumerProcess]


stack = stack_fixture(partitions=1)


@pytest.fixture
def spawn(stack: Stack, tmp_path: Path) -> Iterator[Spawn]:
    started: list[ConsumerProcess] = []

    def start(name: str, **overrides: object) -> ConsumerProcess:
        env = stack.consumer_env(LOG_LEVEL="INFO", **overrides)
        proc = ConsumerProcess(env, name, tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.ensure_dead()  # SIGKILL also ends a stopped process


class Clock:
    """Strictly increasing Materialize-like timestamps (ms)."""

    def __init__(self) -> None:
        self._ts = int(time.time() * 1000)

    def __call__(self) -> int:
        self._ts = max(self._ts + 1, int(time.time() * 1000))
        return self._ts


async def holder_is(stack: Stack, name: str) -> bool:
    return await stack.lease_holders() == [name]


async def applied_at_least(stack: Stack, ts: int) -> bool:
    return (await stack.applied()).get(0, 0) >= ts


async def pending_under(stack: Stack, consumer: str) -> list[bytes]:
    rows: Any = await stack.redis.xpending_range(
        stack.keys.stream(0), GROUP, "-", "+", 10_000, consumername=consumer
    )
    return [row["message_id"] for row in rows]


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def logged(proc: ConsumerProcess, *texts: str) -> bool:
    text = proc.log()
    return any(t in text for t in texts)


def stop_gracefully(proc: ConsumerProcess) -> None:
    proc.signal(signal.SIGTERM)
    code = proc.wait(15)
    assert code == 0, proc.log()[-3000:]


class FrontierWatch:
    """Samples p0's applied frontier and pending entries together (MULTI) while the
    consumers work, and records every pending change at or below the frontier: a
    change that ``applied`` claims is indexed while it is not (yet)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.violations: dict[bytes, str] = {}  # by entry id
        self.samples = 0

    async def check(self) -> None:
        stack, stream = self.stack, self.stack.keys.stream(0)
        async with stack.redis.pipeline(transaction=True) as pipe:
            pipe.get(stack.keys.applied(0))
            pipe.xpending_range(stream, GROUP, "-", "+", 10_000)
            raw_applied, rows = await pipe.execute()
        self.samples += 1
        if raw_applied is None:
            return
        applied = int(raw_applied)
        for row in rows:
            entry_id = row["message_id"]
            hits: Any = await stack.redis.xrange(stream, entry_id, entry_id)
            if not hits or hits[0][1].get(b"op") in (PROGRESS, RECONCILE):
                continue
            ts = int(hits[0][1][b"ts"])
            if ts <= applied:
                self.violations.setdefault(
                    entry_id,
                    f"applied p0={applied} while entry {entry_id.decode()} (ts={ts}) "
                    f"is pending under {row['consumer'].decode()}",
                )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


@contextlib.asynccontextmanager
async def watching(watch: FrontierWatch) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def test_a_paused_old_owners_last_read_is_synced_and_holds_back_applied(
    stack: Stack, spawn: Spawn
) -> None:
    ts = Clock()
    ttl = 4.0  # long enough that the new owner keeps its lease through a short freeze
    old = spawn(OLD, LEASE_TTL_SECONDS=ttl)
    await wait_for(lambda: holder_is(stack, OLD), 30, "the old owner holding p0")
    await stack.write(ts(), orders(0, 20, seq=1))
    first = ts()
    await stack.progress(first)
    await wait_for(lambda: applied_at_least(stack, first), 30, "the old owner's first round")

    old.pause()  # past its lease: the partition moves
    new = spawn(NEW, LEASE_TTL_SECONDS=ttl)
    await wait_for(lambda: holder_is(stack, NEW), 30, "the lease moving to the new owner")
    taken = ts()
    await stack.progress(taken)  # applied once the new owner drained and reads new entries
    await wait_for(lambda: applied_at_least(stack, taken), 30, "the new owner reading")

    watch = FrontierWatch(stack)
    async with watching(watch):
        # Freeze the new owner too, until its blocking read has returned, so that what
        # is written now is left for the old owner's first read when it wakes up.
        new.pause()
        await asyncio.sleep(READ_BLOCK_PASSED)
        await stack.write(ts(), orders(0, 10, seq=2), batch=False)  # ten entries
        await stack.progress(ts())
        old.resume()
        await wait_for(
            lambda: logged(old, "Lost the lease of partition p0", "Lease of partition p0 lost"),
            20,
            "the old owner noticing its lost lease",
        )
        stray = await pending_under(stack, OLD)
        new.resume()
        # precondition: the old owner's read after its lease expired took the entries
        assert len(stray) == 11, f"the old owner read {len(stray)} of 11 entries after waking"

        await stack.write(ts(), orders(20, 10, seq=1))
        last = ts()
        await stack.progress(last)
        await wait_for(lambda: applied_at_least(stack, last), 30, "the new owner's frontier")
        await watch.check()
    assert watch.samples > 10
    assert not watch.violations, list(watch.violations.values())[:5]
    assert await pending_under(stack, OLD) == [], "entries left pending under the old owner"

    await wait_for(lambda: settled(stack), 30, "every entry acknowledged")
    docs = await stack.documents()
    assert {key: doc["seq"] for key, doc in docs.items()} == {
        **{f"order:FM-{n}": 2 for n in range(10)},
        **{f"order:FM-{n}": 1 for n in range(10, 30)},
    }
    assert await stack.dead_letters() == []
    written, acked = await stack.counts()
    assert written == acked == 40
    assert "Took over" in new.log() or "taking them over" in new.log()
    stop_gracefully(new)
    stop_gracefully(old)


async def test_strays_are_taken_over_when_no_progress_entry_follows(
    stack: Stack, spawn: Spawn
) -> None:
    """A quiet producer writes no progress entry after the strays: the owner's periodic
    check (every LEASE_TTL_SECONDS without one) must still find them."""
    ts = Clock()
    owner = spawn(NEW, LEASE_TTL_SECONDS=2)
    await wait_for(lambda: holder_is(stack, NEW), 30, "the owner holding p0")
    await stack.write(ts(), orders(0, 10, seq=1))
    first = ts()
    await stack.progress(first)
    await wait_for(lambda: applied_at_least(stack, first), 30, "the first round")

    # What a paused old owner's one read leaves behind, written and read under its name
    # in one MULTI, so that the owner's blocking read cannot take them first.
    stream, at = stack.keys.stream(0), ts()
    async with stack.redis.pipeline(transaction=True) as pipe:
        for key, doc in orders(10, 5, seq=1):
            body = msgspec.json.encode({**(doc or {}), "sync_version": at})
            pipe.xadd(stream, encode_changes(at, [(key.encode(), body)]))  # type: ignore[arg-type]
        pipe.hincrby(stack.keys.counts(0), stack.keys.written_field(0), 5)
        pipe.xreadgroup(GROUP, OLD, {stream: ">"}, count=100)
        replies = await pipe.execute()
    assert len(replies[-1][0][1]) == 5, "the read under the old owner's name took all five"

    await wait_for(lambda: settled(stack), 30, "the stray entries taken over and acknowledged")
    docs = await stack.documents()
    assert sorted(docs) == sorted(key for key, _ in orders(0, 15, seq=1))
    assert await stack.dead_letters() == []
    written, acked = await stack.counts()
    assert written == acked == 15
    assert "that no consumer has in hand" in owner.log()
    stop_gracefully(owner)
