"""A concrete index named like the alias (the runbook's manual Force Resync) stops the
consumer with a message that names the fix, at start and when it appears mid-run.

Before, ensure_index accepted the concrete index with a WARNING, and every bulk
(``require_alias=true``) failed with index_not_found_exception, counted as a
throttle and retried forever: the pipeline stalled while looking healthy.

Real services: the devstack's Redis and OpenSearch node; real ``consumer.main``
processes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.consumer import ConsumerProcess, Stack, orders, stack_fixture, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


stack = stack_fixture(partitions=2)


async def test_a_concrete_index_at_start_stops_the_consumer(stack: Stack, tmp_path: Path) -> None:
    await stack.search.indices.create(index=stack.alias)  # curl -X PUT /orders
    await stack.write(int(time.time() * 1000), orders(0, 5, status=None))
    consumer = ConsumerProcess(stack.consumer_env(), "cons-layout", tmp_path)
    try:
        code = await asyncio.to_thread(consumer.wait, 30)
    finally:
        consumer.ensure_dead()
    assert code == 1, consumer.log()
    assert "Consumer cannot continue" in consumer.log()
    assert "searchsync index adopt" in consumer.log()
    assert await stack.dead_letters() == []


async def test_a_concrete_index_mid_run_stops_the_consumer_and_loses_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    consumer = ConsumerProcess(stack.consumer_env(), "cons-layout", tmp_path)
    try:
        t = int(time.time() * 1000)
        await stack.write(t, orders(0, 5, status=None))
        await wait_for(lambda: _outstanding_is(stack, 0), 30, "the first orders synced")
        # the runbook's Force Resync by hand: delete the index, create one named like the alias
        await stack.search.indices.delete(index=f"{stack.alias}_v1")
        await stack.search.indices.create(index=stack.alias)
        await stack.write(t + 1, orders(5, 5, status=None))
        code = await asyncio.to_thread(consumer.wait, 30)
    finally:
        consumer.ensure_dead()
    assert code == 1, consumer.log()
    assert "searchsync index adopt" in consumer.log()
    assert await stack.dead_letters() == []
    assert await stack.outstanding() > 0  # the new changes wait, unacknowledged, for the fix


async def _outstanding_is(stack: Stack, count: int) -> bool:
    return await stack.outstanding() == count
