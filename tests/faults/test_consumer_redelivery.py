"""Delivery counts: Redis connection drops must not use them up, dead processes must.

MAX_DELIVERIES protects against poison entries (an entry that kills every consumer
that takes it ends in the dlq), so a delivery is counted when a consumer takes an
entry over, including the same consumer name after a kill -9. A consumer that only
lost its Redis connection while holding entries did not fail on them: re-reading
its own pending entries must not count again, or valid entries would be
dead-lettered by a flaky network.

Real services: a private redis-server (tests.support.consumer.PrivateRedis) behind a
TCP proxy that the test takes down and brings back (tests.support.consumer.Proxy),
the devstack's shared Redis for the process test, and the devstack's OpenSearch
node whose index is write-blocked (403 ``cluster_block_exception``, retried
without using up deliveries) so that the consumer keeps its entries in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import NotFoundError

from common.entries import decode_dead_letter
from common.index import ensure_index
from common.partition import partition_of
from tests.support.consumer import (
    GROUP,
    ConsumerProcess,
    Stack,
    cleanup,
    make_stack,
    running_worker,
    wait_for,
)
from tests.support.services import PrivateRedis, Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MAX_DELIVERIES = 2
CUTS = 4  # more than MAX_DELIVERIES


@pytest.fixture
async def private_stack(private_redis: PrivateRedis) -> AsyncIterator[Stack]:
    # one partition: the runner's log lines (which name no partition) are all about it
    s = await make_stack(partitions=1, redis_url=private_redis.url)
    try:
        yield s
    finally:
        await cleanup(s)


@pytest.fixture
async def shared_stack() -> AsyncIterator[Stack]:
    s = await make_stack(partitions=1)
    try:
        yield s
    finally:
        await cleanup(s)


def orders(start: int, count: int) -> list[tuple[str, dict[str, Any] | None]]:
    return [
        (f"order:FM-{n}", {"order_id": f"order:FM-{n}", "order_status": "PLACED"})
        for n in range(start, start + count)
    ]


async def alias_exists(stack: Stack) -> bool:
    return bool(await stack.search.indices.exists_alias(name=stack.alias))


async def block_writes(stack: Stack, on: bool) -> None:
    body = {"index.blocks.write": True if on else None}
    await stack.search.indices.put_settings(index=stack.alias, body=body)


async def unblock(stack: Stack) -> None:
    with contextlib.suppress(NotFoundError):  # the index was never created
        await block_writes(stack, False)


async def deliveries(stack: Stack) -> dict[bytes, int]:
    """Times delivered of every pending entry, over all partitions."""
    out: dict[bytes, int] = {}
    for stream in stack.keys.streams():
        if not await stack.redis.exists(stream):
            continue
        rows: Any = await stack.redis.xpending_range(stream, GROUP, "-", "+", 10_000)
        out.update({row["message_id"]: int(row["times_delivered"]) for row in rows})
    return out


def runner_logs(caplog: pytest.LogCaptureFixture, since: int, text: str) -> int:
    return sum(
        1
        for record in caplog.records[since:]
        if record.name == "consumer.runner" and text in record.getMessage()
    )


async def test_redis_connection_drops_do_not_use_up_deliveries(
    private_stack: Stack, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    stack = private_stack
    caplog.set_level(logging.INFO, logger="consumer")
    proxy = Proxy("127.0.0.1", private_redis.port)
    await proxy.start()
    settings = stack.settings(
        REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0",
        MAX_DELIVERIES=MAX_DELIVERIES,
        # the drops are short: the partitions stay with this consumer (no takeover)
        LEASE_TTL_SECONDS=10,
        RETRY_INITIAL_BACKOFF=0.05,
        RETRY_MAX_BACKOFF=0.3,
    )
    t = int(time.time() * 1000)
    # written before the consumer starts, so that its first read takes them all
    await ensure_index(stack.search, stack.alias, retention_seconds=3600)
    await block_writes(stack, True)
    await stack.write(t, orders(0, 12))  # one entry of 12 changes
    await stack.write(t + 1, orders(20, 6), batch=False)  # six entries of one
    try:
        async with running_worker(settings):
            held = await wait_for_held(stack, caplog, entries=1 + 6)
            for cut in range(CUTS):
                mark = len(caplog.records)
                await proxy.stop()  # open connections closed, new ones refused
                await wait_for(
                    partial(_logged, caplog, mark, "Redis error on partition"),
                    20,
                    f"the runner failing on Redis (cut {cut + 1})",
                )
                mark = len(caplog.records)
                await proxy.start()
                await wait_for(
                    partial(_resent_or_settled, stack, caplog, mark),
                    20,
                    f"the runner sending its entries again (cut {cut + 1})",
                )
                counts = await deliveries(stack)
                assert counts == dict.fromkeys(held, 1), (
                    f"delivery counts after {cut + 1} Redis drops: {counts}"
                )
            await block_writes(stack, False)
            await wait_for(lambda: _settled(stack), 30, "entries acknowledged after the block")
    finally:
        await proxy.stop()
        await unblock(stack)
    letters = [decode_dead_letter(fields) for fields in await stack.dead_letters()]
    assert letters == [], [letter.reason for letter in letters]
    docs = await stack.documents()
    assert sorted(docs) == sorted(key for key, _ in orders(0, 12) + orders(20, 6))
    written, acked = await stack.counts()
    assert written == acked == 18


async def wait_for_held(stack: Stack, caplog: pytest.LogCaptureFixture, entries: int) -> set[bytes]:
    """Wait until ``entries`` entries are pending and were sent (and refused) at least once."""
    await wait_for(lambda: _pending_and_sent(stack, caplog, entries), 20, f"{entries} entries held")
    return set(await deliveries(stack))


async def _pending_and_sent(stack: Stack, caplog: pytest.LogCaptureFixture, entries: int) -> bool:
    sent = _logged_now(caplog, 0, "OpenSearch bulk operation failed for")
    return sent and len(await deliveries(stack)) == entries


async def _logged(caplog: pytest.LogCaptureFixture, since: int, text: str) -> bool:
    return _logged_now(caplog, since, text)


def _logged_now(caplog: pytest.LogCaptureFixture, since: int, text: str) -> bool:
    return runner_logs(caplog, since, text) > 0


async def _resent_or_settled(stack: Stack, caplog: pytest.LogCaptureFixture, since: int) -> bool:
    # the runner sent its entries again; or they left the pending list (dead-lettered:
    # the failure this test is about)
    resent = runner_logs(caplog, since, "OpenSearch bulk operation failed for") > 0
    return resent or not await deliveries(stack)


async def _settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def test_kill_9_still_counts_a_delivery(shared_stack: Stack, tmp_path: Path) -> None:
    """The poison-entry protection with real processes: one name, killed twice while holding."""
    stack = shared_stack
    env = stack.consumer_env(
        MAX_DELIVERIES=MAX_DELIVERIES, LEASE_TTL_SECONDS=2, RETRY_MAX_BACKOFF=0.3, LOG_LEVEL="INFO"
    )
    stream = stack.keys.stream(partition_of(b"order:FM-1", stack.partitions))
    procs: list[ConsumerProcess] = []

    def start() -> ConsumerProcess:
        # the same CONSUMER_NAME each time, as a restarted pod would have
        log_dir = tmp_path / f"run-{len(procs)}"
        log_dir.mkdir()
        proc = ConsumerProcess(env, "cons-poison", log_dir)
        procs.append(proc)
        return proc

    t = int(time.time() * 1000)
    try:
        start()
        await wait_for(lambda: alias_exists(stack), 30, "index bootstrap")
        await block_writes(stack, True)
        await stack.write(t, orders(1, 1))
        for delivery in range(1, MAX_DELIVERIES + 1):
            proc = procs[-1]
            await wait_for(
                partial(_held_by_process, stack, stream, proc, delivery),
                20,
                f"delivery {delivery} in hand",
            )
            proc.proc.kill()  # SIGKILL while holding the entry: no ack, no lease release
            await asyncio.to_thread(proc.wait, 5)
            start()
        # the next takeover is delivery MAX_DELIVERIES + 1: dead-lettered, not sent
        await wait_for(lambda: _has_letters(stack), 30, "the entry in the dlq")
        await block_writes(stack, False)
        await stack.write(t + 1, orders(2, 1))
        await wait_for(lambda: _settled(stack), 30, "entries acknowledged")
    finally:
        for proc in procs:
            proc.ensure_dead()
        await unblock(stack)
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"order:FM-1" and letter.deliveries == MAX_DELIVERIES + 1
    assert f"more than MAX_DELIVERIES={MAX_DELIVERIES}" in letter.reason
    assert sorted(await stack.documents()) == ["order:FM-2"]


async def _held_by_process(stack: Stack, stream: str, proc: ConsumerProcess, delivery: int) -> bool:
    rows: Any = await stack.redis.xpending_range(stream, GROUP, "-", "+", 10)
    held = [row for row in rows if int(row["times_delivered"]) == delivery]
    return bool(held) and "OpenSearch bulk operation failed" in proc.log()


async def _has_letters(stack: Stack) -> bool:
    return bool(await stack.dead_letters())
