"""Attempts: Redis trouble, rebalances and restarts must not use them up; dying mid-bulk must.

MAX_DELIVERIES protects against poison entries (an entry that kills every consumer
that sends it ends in the dlq), so an attempt counts when a consumer sent a bulk
carrying the entry and never came back (consumer.attempts). Taking entries over
is not an attempt: a consumer that lost its Redis connection while holding
entries, even for longer than its lease (every recovery is then a takeover that
Redis counts as a delivery), did not fail on them, or valid changes would be
dead-lettered by a flaky network.

Real services: a private redis-server (tests.support.consumer.PrivateRedis) behind a
TCP proxy that the test takes down and brings back (tests.support.consumer.Proxy),
the devstack's shared Redis for the process test, and the devstack's OpenSearch
node whose index is write-blocked (403 ``cluster_block_exception``, retried
without using up attempts) so that the consumer keeps its entries in hand, or
reached through an HTTP proxy that swallows ``_bulk`` requests so that a bulk
stays on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import NotFoundError

from searchsync.common.config import Settings
from searchsync.common.entries import decode_dead_letter
from searchsync.common.index import ensure_index
from searchsync.common.partition import partition_of
from tests.support.consumer import (
    GROUP,
    ConsumerProcess,
    Stack,
    orders,
    running_worker,
    stack_fixture,
    wait_for,
)
from tests.support.http_proxy import Action, HttpProxy, RequestHead
from tests.support.services import PrivateRedis, Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MAX_DELIVERIES = 2
CUTS = 4  # more than MAX_DELIVERIES


# one partition: the runner's log lines (which name no partition) are all about it
private_stack = stack_fixture(partitions=1, private_redis=True)
shared_stack = stack_fixture(partitions=1)


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


async def held_behind_a_redis_proxy(
    stack: Stack, redis: PrivateRedis, *, lease_ttl: float
) -> tuple[Proxy, Settings]:
    """A started proxy to ``redis``, consumer settings through it, and 18 changes (one
    entry of 12, six of one) waiting for a consumer in front of a write-blocked index,
    so that its first read takes them all and keeps them in hand."""
    proxy = Proxy("127.0.0.1", redis.port)
    await proxy.start()
    settings = stack.settings(
        REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0",
        MAX_DELIVERIES=MAX_DELIVERIES,
        LEASE_TTL_SECONDS=lease_ttl,
        RETRY_INITIAL_BACKOFF=0.05,
        RETRY_MAX_BACKOFF=0.3,
    )
    t = int(time.time() * 1000)
    await ensure_index(stack.search, stack.alias, retention_seconds=3600)
    await block_writes(stack, True)
    await stack.write(t, orders(0, 12))
    await stack.write(t + 1, orders(20, 6), batch=False)
    return proxy, settings


def runner_logs(caplog: pytest.LogCaptureFixture, since: int, text: str) -> int:
    return sum(
        1
        for record in caplog.records[since:]
        if record.name == "searchsync.consumer.runner" and text in record.getMessage()
    )


async def test_redis_connection_drops_do_not_use_up_deliveries(
    private_stack: Stack, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    stack = private_stack
    caplog.set_level(logging.INFO, logger="searchsync.consumer")
    # the drops are short: the partitions stay with this consumer (no takeover)
    proxy, settings = await held_behind_a_redis_proxy(stack, private_redis, lease_ttl=10)
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
                # a cut can land between a bulk and its answer: that one stays counted
                counts = await attempts(stack)
                assert set(counts) <= held and all(n <= 1 for n in counts.values()), (
                    f"attempts after {cut + 1} Redis drops: {counts}"
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


async def test_takeovers_after_redis_outages_longer_than_the_lease_use_up_nothing(
    private_stack: Stack, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Each outage outlives the lease, so each recovery is a takeover (XAUTOCLAIM),
    which Redis counts as a delivery; before consumer.attempts, the third one
    dead-lettered every valid entry the consumer held."""
    stack = private_stack
    caplog.set_level(logging.INFO, logger="searchsync.consumer")
    proxy, settings = await held_behind_a_redis_proxy(stack, private_redis, lease_ttl=1)
    try:
        async with running_worker(settings):
            await wait_for_held(stack, caplog, entries=1 + 6)
            for cut in range(CUTS):
                mark = len(caplog.records)
                await proxy.stop()
                await asyncio.sleep(2.5)  # the 1 s lease (0.8 s held) is long gone
                await proxy.start()
                await wait_for(
                    partial(_taken_over_and_resent, stack, caplog, mark),
                    20,
                    f"the takeover and a new send after outage {cut + 1}",
                )
            letters = [decode_dead_letter(f) for f in await stack.dead_letters()]
            assert letters == [], (
                f"{len(letters)} valid changes dead-lettered after {CUTS} takeovers: "
                f"{letters[0].reason if letters else ''}"
            )
            # Redis' view: a takeover claims the pending entries a batch at a time (its
            # first claim takes entries to be full) and writes stay blocked, so the
            # entries of the first batch were taken over, and counted, at every cut
            counts = await deliveries(stack)
            assert counts and max(counts.values()) > MAX_DELIVERIES + 1, counts
            await block_writes(stack, False)
            await wait_for(lambda: _settled(stack), 30, "entries acknowledged after the block")
    finally:
        await proxy.stop()
        await unblock(stack)
    letters = [decode_dead_letter(fields) for fields in await stack.dead_letters()]
    assert letters == [], [letter.reason for letter in letters]
    docs = await stack.documents()
    assert sorted(docs) == sorted(key for key, _ in orders(0, 12) + orders(20, 6))
    assert await attempts(stack) == {}


async def _taken_over_and_resent(
    stack: Stack, caplog: pytest.LogCaptureFixture, since: int
) -> bool:
    # taken over, then sent again; or dead-lettered instead (the failure this is about)
    if await stack.dead_letters():
        return True
    if runner_logs(caplog, since, "Took over") == 0:
        return False
    return await _resent_or_settled(stack, caplog, since)


class BulkSwallowingProxy(HttpProxy):
    """An HTTP proxy to OpenSearch that, once :attr:`swallow` is set, reads ``_bulk``
    requests and never answers them (everything else is forwarded): a bulk on the
    wire then waits for an answer that never comes, as with a node that hangs on it."""

    swallow = False

    def action(self, request: RequestHead) -> Action:
        if self.swallow and "/_bulk" in request.start_line:
            return "swallow"
        return super().action(request)


async def test_a_consumer_killed_mid_bulk_counts_an_attempt(
    shared_stack: Stack, tmp_path: Path
) -> None:
    """The poison-entry protection with real processes: one name, killed twice while its
    bulk is on the wire; the third owner dead-letters the entry without sending it."""
    stack = shared_stack
    proxy = BulkSwallowingProxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    proxy.start()
    env = stack.consumer_env(
        OS_PORT=proxy.port,
        OS_TIMEOUT_SECONDS=60,
        MAX_DELIVERIES=MAX_DELIVERIES,
        LEASE_TTL_SECONDS=2,
        RETRY_MAX_BACKOFF=0.3,
        LOG_LEVEL="INFO",
    )
    partition = partition_of(b"order:FM-1", stack.partitions)
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
        await wait_for(lambda: _logged_in(procs[-1], "Consumer cons-poison started"), 30, "start")
        proxy.swallow = True
        await stack.write(t, orders(1, 1))
        for attempt in range(1, MAX_DELIVERIES + 1):
            await wait_for(
                partial(_in_flight_after, stack, partition, attempt),
                30,
                f"attempt {attempt} on the wire",
            )
            procs[-1].proc.kill()  # SIGKILL mid-request: no answer, no ack, no lease release
            await asyncio.to_thread(procs[-1].wait, 5)
            start()
        # the third owner finds MAX_DELIVERIES attempts: dead-lettered, not sent
        await wait_for(lambda: _has_letters(stack), 30, "the entry in the dlq")
        proxy.swallow = False
        await stack.write(t + 1, orders(2, 1))
        await wait_for(lambda: _settled(stack), 60, "entries acknowledged")
    finally:
        for proc in procs:
            proc.ensure_dead()
        proxy.close()
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"order:FM-1" and letter.deliveries == MAX_DELIVERIES
    assert f"attempted {MAX_DELIVERIES} times without an outcome" in letter.reason
    assert sorted(await stack.documents()) == ["order:FM-2"]
    assert await attempts(stack) == {}


async def _logged_in(proc: ConsumerProcess, text: str) -> bool:
    return text in proc.log()


async def _in_flight_after(stack: Stack, partition: int, count: int) -> bool:
    """The entry's bulk is on the wire (its in-flight marker is set) after ``count`` - 1
    earlier attempts were counted."""
    raw: Any = await stack.redis.hgetall(stack.keys.attempts(partition))
    markers = [field for field in raw if field.endswith(b"@")]
    counts = [int(n) for field, n in raw.items() if not field.endswith(b"@")]
    return len(markers) == 1 and sum(counts) == count - 1


async def attempts(stack: Stack) -> dict[bytes, int]:
    """The consumers' attempts of every pending entry, over all partitions (in-flight
    markers, ``<id>@``, left out)."""
    out: dict[bytes, int] = {}
    for partition in range(stack.partitions):
        raw: Any = await stack.redis.hgetall(stack.keys.attempts(partition))
        out.update({field: int(n) for field, n in raw.items() if not field.endswith(b"@")})
    return out


async def _has_letters(stack: Stack) -> bool:
    return bool(await stack.dead_letters())
