"""A consumer acknowledges an entry only once its dead letters are in the DLQ.

consumer.acks.Acker.settle used to queue the letters' XADDs and the entries' XACK on
one non-transactional pipeline. Redis runs every command of such a pipeline even
after one fails: with memory full (maxmemory, noeviction) it refuses the XADD (deny-oom)
and still runs the XACK (not deny-oom), so the rejected change was acknowledged,
never indexed and in no DLQ. On Redis Cluster the same pipeline is worse: redis-py
sends each node's commands concurrently, so the XACK (the partition's slot) does not
even wait for the letters (the view's slot) on a node that is failing over.

A private redis-server (memory made full with CONFIG SET maxmemory), well under a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from searchsync.common.entries import DeadLetter
from searchsync.common.errors import Failure, TransientError, classify
from searchsync.common.keys import Keys
from searchsync.common.streams import ensure_groups
from searchsync.consumer.acks import Acker
from tests.support.cluster_redis import OneNodeCluster, one_node_cluster
from tests.support.services import PrivateRedis

pytestmark = pytest.mark.timeout(30)

GROUP = "searchsync"


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    private = PrivateRedis(tmp_path)
    private.start()
    client = Redis(port=private.port)
    try:
        yield client
    finally:
        await client.aclose()
        private.kill()


async def read_with_letter(redis: Redis, keys: Keys) -> tuple[str, bytes, DeadLetter]:
    """An entry of p0 read by consumer c1 (pending), and the dead letter for it."""
    await ensure_groups(redis, keys, GROUP)
    stream = keys.stream(0)
    entry_id = await redis.xadd(stream, {b"ts": b"10"})
    assert isinstance(entry_id, bytes)
    await redis.xreadgroup(GROUP, "c1", {stream: ">"})
    letter = DeadLetter(ts=10, op=b"u", key=b"o1", reason="mapper_parsing_exception",
                        source=f"p0/{entry_id.decode()}")  # fmt: skip
    return stream, entry_id, letter


async def test_an_entry_whose_dead_letter_is_refused_stays_pending(redis: Redis) -> None:
    keys = Keys("letters_before_ack_mv", 1)
    stream, entry_id, letter = await read_with_letter(redis, keys)
    acker = Acker(redis, keys, GROUP)

    await redis.config_set("maxmemory", 1)  # full: deny-oom writes (XADD) are refused
    with pytest.raises(ResponseError, match="maxmemory"):
        await acker.settle(0, [entry_id], 1, [letter])
    pending = await redis.xpending(stream, GROUP)
    assert pending["pending"] == 1, "acknowledged although its dead letter was refused"
    assert await redis.xlen(keys.dlq) == 0

    await redis.config_set("maxmemory", 0)  # the consumer's retry, once Redis has room
    await acker.settle(0, [entry_id], 1, [letter])
    assert (await redis.xpending(stream, GROUP))["pending"] == 0
    assert await redis.xlen(keys.dlq) == 1


async def test_a_marker_whose_snapshot_floor_is_refused_stays_pending(redis: Redis) -> None:
    # the floor is what keeps a late change below the snapshot out of the index once
    # the marker is acknowledged (consumer.batch): never the XACK without it
    keys = Keys("floor_before_ack_mv", 1)
    await ensure_groups(redis, keys, GROUP)
    stream = keys.stream(0)
    marker = await redis.xadd(stream, {b"ts": b"2000", b"op": b"r"})
    assert isinstance(marker, bytes)
    await redis.xreadgroup(GROUP, "c1", {stream: ">"})
    acker = Acker(redis, keys, GROUP)

    await redis.config_set("maxmemory", 1)  # full: ZADD (deny-oom) refused, XACK not
    with pytest.raises(ResponseError, match="maxmemory"):
        await acker.settle(0, [marker], 0, floor=2000)
    assert (await redis.xpending(stream, GROUP))["pending"] == 1, "acked without its floor"
    assert await acker.snapshot_floor(0) is None

    await redis.config_set("maxmemory", 0)
    await acker.settle(0, [marker], 0, floor=2000)
    assert (await redis.xpending(stream, GROUP))["pending"] == 0
    assert await acker.snapshot_floor(0) == 2000


async def test_a_refusal_in_the_round_trip_is_raised_as_redis_said_it(redis: Redis) -> None:
    # redis-py rewrites the first error of a pipeline as "Command # 1 (…) of pipeline
    # caused error: …" (before 8.1 without even the reply's text): common.errors reads
    # the reply's code from the message's first word, so a NOREPLICAS (min-replicas-to-
    # write, a replica lagging) was classified fatal and the consumer exited instead of
    # backing off. Failing first: the message began "Command", classify said FATAL.
    keys = Keys("refused_in_round_trip_mv", 1)
    stream, entry_id, letter = await read_with_letter(redis, keys)
    await redis.config_set("min-replicas-to-write", 1)  # no replica: writes refused
    with pytest.raises(ResponseError) as refused:
        await Acker(redis, keys, GROUP).settle(0, [entry_id], 1, [letter])
    await redis.config_set("min-replicas-to-write", 0)
    assert str(refused.value).startswith("NOREPLICAS"), str(refused.value)
    assert classify(refused.value) is Failure.TRANSIENT
    assert (await redis.xpending(stream, GROUP))["pending"] == 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[OneNodeCluster]:
    with one_node_cluster() as server:
        yield server


@pytest.mark.parametrize("client", ["plain", "cluster"])
async def test_with_replicas_asked_an_entry_is_acked_once_its_letters_are_on_them(
    cluster: OneNodeCluster, client: str
) -> None:
    """REDIS_WAIT_REPLICAS for the consumer's letters: on a cluster the letters (the view's
    slot) and the XACK (the partition's) are on different nodes, so a failover of the
    letters' node after the XACK would lose the change; the WAIT goes on the connection
    that wrote them. Here no replica exists: the settle fails and the entry stays pending."""
    redis: Redis = (
        Redis.from_url(cluster.url) if client == "plain" else RedisCluster.from_url(cluster.url)  # type: ignore[assignment]
    )
    try:
        keys = Keys(f"letters_waited_{client}_mv", 1)
        await ensure_groups(redis, keys, GROUP)
        stream = keys.stream(0)
        entry_id = await redis.xadd(stream, {b"ts": b"10"})
        assert isinstance(entry_id, bytes)
        await redis.xreadgroup(GROUP, "c1", {stream: ">"})
        letter = DeadLetter(ts=10, op=b"u", key=b"o1", reason="mapper_parsing_exception",
                            source=f"p0/{entry_id.decode()}")  # fmt: skip
        acker = Acker(redis, keys, GROUP, wait=(1, 50))
        with pytest.raises(TransientError, match="0 of 1"):
            await acker.settle(0, [entry_id], 1, [letter])
        assert (await redis.xpending(stream, GROUP))["pending"] == 1
        await Acker(redis, keys, GROUP).settle(0, [entry_id], 1)  # no wait asked: acked
        assert (await redis.xpending(stream, GROUP))["pending"] == 0
    finally:
        await redis.aclose()
