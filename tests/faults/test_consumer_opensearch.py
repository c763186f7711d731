"""OpenSearch refusing or unreachable: throttled items and failed requests are retried, not lost.

Real Redis and the devstack's real OpenSearch node, consumer in the test's event loop.
429s come from OpenSearch itself: ``index.blocks.read_only_allow_delete`` (the
block OpenSearch sets at the flood-stage disk watermark) makes every bulk item fail
with 429 ``cluster_block_exception``; ``index.blocks.write`` gives 403
``cluster_block_exception``. An outage is a real TCP proxy in front of the node
that the test stops (connection refused) and starts again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.consumer import (
    ConsumerProcess,
    Stack,
    orders,
    running_worker,
    stack_fixture,
    wait_for,
)
from tests.support.services import Proxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


stack = stack_fixture(partitions=4)


def errors_of(worker: Any, kind: str) -> float:
    value = worker.metrics.registry.get_sample_value("opensearch_sync_errors_total", {"kind": kind})
    return float(value or 0)


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def alias_exists(stack: Stack) -> bool:
    return bool(await stack.search.indices.exists_alias(name=stack.alias))


async def set_block(stack: Stack, name: str, value: bool | None) -> None:
    await stack.search.indices.put_settings(index=stack.alias, body={f"index.blocks.{name}": value})


@pytest.mark.parametrize(("block", "status"), [("read_only_allow_delete", "429"), ("write", "403")])
async def test_blocked_index_is_retried_until_it_accepts(
    stack: Stack, block: str, status: str
) -> None:
    t = int(time.time() * 1000)
    # MAX_DELIVERIES=2: throttling must not use up deliveries, or these would be dead-lettered
    settings = stack.settings(MAX_DELIVERIES=2, RETRY_INITIAL_BACKOFF=0.05, RETRY_MAX_BACKOFF=0.3)
    async with running_worker(settings) as worker:
        await wait_for(lambda: alias_exists(stack), 20, "index bootstrap")
        await stack.write(t, orders(0, 50))
        await wait_for(lambda: settled(stack), 20, "first entries acknowledged")
        await set_block(stack, block, True)
        try:
            await stack.write(
                t + 1, orders(0, 20, "DELIVERED") + [(f"order:FM-{n}", None) for n in range(40, 50)]
            )
            await stack.write(t + 2, orders(100, 30))
            await wait_for(lambda: _throttled_over(worker, 10), 30, "repeated throttling")
            assert await stack.outstanding() > 0
        finally:
            await set_block(stack, block, None)
        await wait_for(lambda: settled(stack), 30, "entries acknowledged after the block")
    docs = await stack.documents()
    assert sorted(docs) == sorted(
        [f"order:FM-{n}" for n in range(40)] + [f"order:FM-{n}" for n in range(100, 130)]
    )
    assert {docs[f"order:FM-{n}"]["order_status"] for n in range(20)} == {"DELIVERED"}
    assert await stack.dead_letters() == []


async def _throttled_over(worker: Any, count: int) -> bool:
    return errors_of(worker, "throttled") > count


async def test_opensearch_outage_is_retried_and_nothing_is_lost(stack: Stack) -> None:
    proxy = Proxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    await proxy.start()
    t = int(time.time() * 1000)
    settings = stack.settings(OS_PORT=proxy.port, OS_TIMEOUT_SECONDS=5, RETRY_MAX_BACKOFF=0.5)
    try:
        async with running_worker(settings) as worker:
            await stack.write(t, orders(0, 30))
            await wait_for(lambda: settled(stack), 30, "entries acknowledged before the outage")
            await proxy.stop()
            await stack.write(t + 1, orders(0, 30, "DELIVERED"))
            await stack.write(t + 2, orders(30, 30))
            await wait_for(lambda: _request_errors_over(worker, 3), 30, "failed bulk requests")
            assert await stack.outstanding() > 0
            await proxy.start()
            await wait_for(lambda: settled(stack), 30, "entries acknowledged after the outage")
    finally:
        await proxy.stop()
    docs = await stack.documents()
    assert len(docs) == 60
    assert {docs[f"order:FM-{n}"]["order_status"] for n in range(30)} == {"DELIVERED"}
    assert await stack.dead_letters() == []


async def _request_errors_over(worker: Any, count: int) -> bool:
    return errors_of(worker, "request") > count


async def test_sigterm_while_opensearch_is_down_exits_in_time(stack: Stack, tmp_path: Path) -> None:
    proxy = Proxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    await proxy.start()
    env = stack.consumer_env(OS_PORT=proxy.port, RETRY_INITIAL_BACKOFF=1, RETRY_MAX_BACKOFF=30)
    proc = ConsumerProcess(env, "cons-down", tmp_path)
    try:
        # the bootstrap's last request is done when the consumer says it started
        await wait_for(lambda: _logged(proc, "Consumer cons-down started"), 30, "index bootstrap")
        await proxy.stop()
        t = int(time.time() * 1000)
        await stack.write(t, orders(0, 20))
        await wait_for(lambda: _logged(proc, "OpenSearch bulk operation failed"), 30, "a failure")
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        took = time.monotonic() - started
    finally:
        proc.ensure_dead()
        await proxy.stop()
    assert code == 0, proc.log()[-2000:]
    assert took < 10
    assert "Orders sync worker stopped" in proc.log()
    # nothing was acknowledged that OpenSearch did not take: it is all still there to sync
    assert await stack.outstanding() == len(await _entries(stack))
    assert await stack.lease_holders() == [None] * stack.partitions


async def _logged(proc: ConsumerProcess, text: str) -> bool:
    return text in proc.log()


async def _entries(stack: Stack) -> list[bytes]:
    ids: list[bytes] = []
    for stream in stack.keys.streams():
        rows: Any = await stack.redis.xrange(stream)
        ids += [entry_id for entry_id, _ in rows]
    return ids
