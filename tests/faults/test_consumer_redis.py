"""Redis dies under a running consumer and comes back: the consumer resumes, nothing is lost.

Uses a private redis-server (tests.support.consumer.PrivateRedis: Debian's
package on a free port, with its own directory and ``appendfsync always`` so that
killing it loses no acknowledged write); the shared Redis is never touched.
OpenSearch is the devstack's real node.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.consumer import Stack, orders, running_worker, stack_fixture, wait_for
from tests.support.services import PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


stack = stack_fixture(partitions=4, private_redis=True)


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def test_consumer_survives_a_redis_restart(
    stack: Stack, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    t = int(time.time() * 1000)
    async with running_worker(stack.settings(RETRY_MAX_BACKOFF=0.5)) as worker:
        await stack.write(t, orders(0, 40, "PLACED"))
        await wait_for(lambda: settled(stack), 30, "entries acknowledged before the restart")
        private_redis.kill()  # SIGKILL
        # the consumer runs on, without Redis, past its lease time (waits, not a fixed
        # sleep: on a loaded machine the first failed tick came after 2.5 s in CI)

        async def noticed() -> bool:
            return "Membership tick failed" in caplog.text

        async def let_go() -> bool:  # leases no longer vouched for: partitions let go
            return not worker.runners

        await wait_for(noticed, 30, "a failed membership tick logged")
        await wait_for(let_go, 30, "the partitions let go")
        private_redis.start()
        # the harness' own connection reconnects on first use
        stack.redis = Redis.from_url(private_redis.url)
        await stack.write(t + 1, orders(0, 40, "DELIVERED"))
        await stack.write(t + 2, orders(40, 20, "PLACED"))
        await wait_for(lambda: settled(stack), 30, "entries acknowledged after the restart")
        await wait_for(lambda: _owns(worker, 4), 10, "partitions owned again")
    docs = await stack.documents()
    assert len(docs) == 60
    assert {docs[f"order:FM-{n}"]["order_status"] for n in range(40)} == {"DELIVERED"}
    assert await stack.dead_letters() == []


async def _owns(worker: Any, count: int) -> bool:
    return len(worker.runners) == count
