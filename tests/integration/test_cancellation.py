"""Background loops end when cancelled, even when redis-py swallows the cancellation.

Services: the devstack Redis (the swallowing happens only with real round trips).
Each case cancels a loop at a random moment early in its life, when a Redis
command is most likely in flight, and requires the task to end; common.cancellation
says why this needs code of our own.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from searchsync.common.keys import Keys
from searchsync.consumer import reconcile
from searchsync.consumer.reconcile import Reconciler
from searchsync.producer.backpressure import BufferMonitor
from tests.support.consumer import service_env

pytestmark = pytest.mark.timeout(120)

ATTEMPTS = 150


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(service_env()["REDIS_URL"])
    yield client
    await client.aclose()


async def survivors(start: Callable[[], Coroutine[Any, Any, None]], rnd: random.Random) -> int:
    """How many of ATTEMPTS tasks running ``start()`` outlived a cancel by 1 s."""
    alive = 0
    for _ in range(ATTEMPTS):
        task = asyncio.create_task(start())
        await asyncio.sleep(rnd.random() * 0.003)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            alive += 1
            while not task.done():  # keep the next attempt clean
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
    return alive


async def test_the_buffer_monitor_ends_when_cancelled(redis: Redis) -> None:
    keys = Keys(f"test_cancel_{uuid.uuid4().hex[:8]}", 8)
    monitor = BufferMonitor(redis, keys, group="g", threshold=5000, resume=2500, log_seconds=3600)
    try:
        assert await survivors(monitor.run, random.Random(1)) == 0
    finally:
        found = [key async for key in redis.scan_iter(match=keys.pattern)]
        if found:
            await redis.delete(*found)


async def test_the_reconcile_lock_keeper_ends_when_cancelled(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "LOCK_RENEW_SECONDS", 0.0)  # renew back to back
    keys = Keys(f"test_cancel_{uuid.uuid4().hex[:8]}", 8)
    client = AsyncOpenSearch(hosts=[{"host": "127.0.0.1", "port": 9}])  # never called
    keeper = Reconciler(redis, client, keys, "unused", "me")
    try:
        assert await survivors(keeper._keep_lock, random.Random(2)) == 0
    finally:
        await redis.delete(keys.reconcile_lock)
        await client.close()
