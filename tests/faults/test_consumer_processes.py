"""Consumer replicas as real processes: kill -9, scaling under load, graceful stop.

Real Redis and the devstack's OpenSearch node; each consumer is a
``python -m searchsync.consumer.main`` subprocess with LEASE_TTL_SECONDS=2 and small
batches, stopped with real signals. Entries are written while they run by a
LoadWriter (per-key sequence numbers in the documents), so every check is on
data that moved across a death, a join or a leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.consumer import (
    ConsumerProcess,
    LoadWriter,
    OrderWatcher,
    Stack,
    stack_fixture,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 8
TTL = 2.0


stack = stack_fixture(partitions=PARTITIONS)


@pytest.fixture
def spawn(stack: Stack, tmp_path: Path) -> Iterator[object]:
    started: list[ConsumerProcess] = []

    def start(name: str) -> ConsumerProcess:
        env = stack.consumer_env(LEASE_TTL_SECONDS=TTL, MAX_BATCH_SIZE=100, LOG_LEVEL="INFO")
        proc = ConsumerProcess(env, name, tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.ensure_dead()


async def holders(stack: Stack) -> list[str | None]:
    return await stack.lease_holders()


async def spread_over(stack: Stack, names: set[str]) -> bool:
    """Every partition leased, to exactly ``names``, evenly."""
    current = await holders(stack)
    if set(current) != names:
        return False
    counts = [current.count(name) for name in names]
    return max(counts) - min(counts) <= 1


async def wait_spread(stack: Stack, procs: dict[str, ConsumerProcess]) -> None:
    """Until every partition is leased evenly to ``procs``; on a timeout, their logs."""
    try:
        await wait_for(lambda: spread_over(stack, set(procs)), 30, "partitions spread")
    except AssertionError as error:
        logs = "\n".join(f"--- {name}\n{proc.log()[-3000:]}" for name, proc in procs.items())
        raise AssertionError(f"{error}: holders {await holders(stack)}\n{logs}") from None


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def check_final_state(stack: Stack, writer: LoadWriter) -> None:
    await wait_for(lambda: settled(stack), 60, "every entry acknowledged")
    docs = await stack.documents()
    assert set(docs) == set(writer.last_seq), "a key is missing"
    stale = {
        k: (docs[k]["seq"], seq) for k, seq in writer.last_seq.items() if docs[k]["seq"] != seq
    }
    assert not stale, f"keys not at their newest version: {list(stale.items())[:5]}"
    assert await stack.dead_letters() == []
    written, acked = await stack.counts()
    assert written == acked == writer.changes


@contextlib.asynccontextmanager
async def load(writer: LoadWriter, watcher: OrderWatcher | None = None) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writer.run(stop))]
    if watcher is not None:
        tasks.append(asyncio.create_task(watcher.run(stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def stop_gracefully(proc: ConsumerProcess) -> float:
    start = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = proc.wait(15)
    took = time.monotonic() - start
    assert code == 0, proc.log()[-3000:]
    assert "Orders sync worker stopped" in proc.log()
    return took


async def test_kill_9_moves_partitions_and_loses_nothing(stack: Stack, spawn: object) -> None:
    names = ["cons-a", "cons-b", "cons-c"]
    procs = {name: spawn(name) for name in names}  # type: ignore[operator]
    await wait_spread(stack, procs)
    writer = LoadWriter(stack, keys=400, per_round=40, interval=0.1)
    async with load(writer):
        await asyncio.sleep(2)
        victim = procs["cons-b"]
        orphaned = [p for p, h in enumerate(await holders(stack)) if h == "cons-b"]
        victim.proc.kill()  # SIGKILL: no chance to flush, ack or release
        victim.wait(5)
        moved_after = await wait_for(
            lambda: _all_moved(stack, orphaned, {"cons-a", "cons-c"}), 3 * TTL, "takeover"
        )
        print(f"partitions {orphaned} moved {moved_after:.2f}s after kill -9 (TTL {TTL}s)")
        # the contract is "within LEASE_TTL_SECONDS"; the slack covers the poll and a loaded box
        assert moved_after <= TTL + 1.0
        await asyncio.sleep(2)
    await check_final_state(stack, writer)
    for name in ("cons-a", "cons-c"):
        stop_gracefully(procs[name])


async def _all_moved(stack: Stack, partitions: list[int], to: set[str]) -> bool:
    current = await holders(stack)
    return all(current[p] in to for p in partitions)


async def test_scale_1_4_1_under_load_keeps_per_key_order(stack: Stack, spawn: object) -> None:
    first = spawn("cons-0")  # type: ignore[operator]
    await wait_for(lambda: spread_over(stack, {"cons-0"}), 30, "one consumer owning all")
    writer = LoadWriter(stack, keys=300, per_round=30, interval=0.1)
    watcher = OrderWatcher(stack, writer.keys[:60])
    async with load(writer, watcher):
        await asyncio.sleep(2)
        extra = [spawn(f"cons-{n}") for n in (1, 2, 3)]  # type: ignore[operator]
        all_four = {"cons-0", "cons-1", "cons-2", "cons-3"}
        await wait_for(lambda: spread_over(stack, all_four), 20, "partitions spread over 4")
        await asyncio.sleep(2)
        for proc in extra:
            stop_gracefully(proc)
        await wait_for(lambda: spread_over(stack, {"cons-0"}), 20, "back to one consumer")
        await asyncio.sleep(2)
    await check_final_state(stack, writer)
    assert watcher.samples > 10
    assert watcher.regressions == [], watcher.regressions[:5]
    stop_gracefully(first)


async def test_graceful_stop_leaves_no_pending_entries(stack: Stack, spawn: object) -> None:
    procs = [spawn("cons-x"), spawn("cons-y")]  # type: ignore[operator]
    await wait_for(lambda: spread_over(stack, {"cons-x", "cons-y"}), 30, "partitions spread")
    writer = LoadWriter(stack, keys=300, per_round=60, interval=0.05)
    async with load(writer):
        await asyncio.sleep(2)
        took = stop_gracefully(procs[0])  # mid-load
        print(f"cons-x stopped in {took:.2f}s")
        assert took < 10
        for stream in stack.keys.streams():
            rows = await stack.redis.xpending_range(stream, "searchsync", "-", "+", 10, "cons-x")
            assert rows == [], f"cons-x left pending entries on {stream}: {rows}"
        assert "cons-x" not in await holders(stack)
        assert await stack.redis.zscore(stack.keys.members, "cons-x") is None
        await wait_for(lambda: spread_over(stack, {"cons-y"}), 10, "cons-y taking over")
        await asyncio.sleep(1)
    await check_final_state(stack, writer)
    stop_gracefully(procs[1])
    assert await stack.pending() == 0
    assert await stack.redis.zcard(stack.keys.members) == 0
