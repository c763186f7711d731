"""The backpressure buffer after Redis restarts from a rewritten AOF.

Found by the chaos run (tests/chaos): after BGREWRITEAOF and a restart, Redis 7.0
overstates a consumer group's ``lag`` in XINFO GROUPS (its ``entries-read`` goes
back) while every entry has been delivered and acknowledged. The buffer took
``lag`` as a lower bound, so the producer saw thousands of phantom changes, kept
backpressure on for good and the pipeline stalled. The buffer's magnitude now
comes from the change counters and the pending entries only.

Real services: a private redis-server with AOF (tests.support.services).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from searchsync.common.keys import Keys
from tests.support.services import PrivateRedis

pytestmark = pytest.mark.timeout(60)

GROUP = "searchsync"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    private = PrivateRedis(tmp_path, appendfsync="always")
    private.start()
    yield private
    private.kill()


def consume(client: redis.Redis, keys: Keys, entries: int) -> None:
    """Write ``entries`` one-change entries to p0 and acknowledge them, as the producer
    and a consumer do (counters included)."""
    stream = keys.stream(0)
    for n in range(entries):
        client.xadd(stream, {"ts": str(n), "op": "d", "key": f"k{n}"})
    client.hincrby(keys.counts(0), keys.written_field(0), entries)
    read: Any = client.xreadgroup(GROUP, "c", {stream: ">"}, count=10_000)
    ids = [entry_id for entry_id, _ in read[0][1]]
    client.xack(stream, GROUP, *ids)
    client.hincrby(keys.counts(0), keys.acked_field(0), len(ids))


async def test_a_restart_after_an_aof_rewrite_shows_no_phantom_buffer(
    server: PrivateRedis,
) -> None:
    from redis.asyncio import Redis

    from searchsync.producer.backpressure import read_buffer

    keys = Keys("buffer_test", 1)
    client = redis.Redis(port=server.port)
    client.xgroup_create(keys.stream(0), GROUP, id="0", mkstream=True)
    consume(client, keys, 300)
    client.bgrewriteaof()
    await asyncio.sleep(1)  # the rewrite runs in a child process
    consume(client, keys, 700)
    server.kill_gracefully()
    server.start()
    info = client.xinfo_groups(keys.stream(0))[0]
    assert info["pending"] == 0
    async_client = Redis(port=server.port)
    try:
        assert await read_buffer(async_client, keys, GROUP) == 0, f"Redis says {info}"
    finally:
        await async_client.aclose()
