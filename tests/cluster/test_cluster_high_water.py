"""On Redis Cluster no entry lands above the high-water mark when raising the mark fails.

The producer raises the mark (``ZADD GT``, the view's slot) before it adds entries,
progress or reconcile entries (partition slots): a consumer dead-letters any entry
above the mark as not written by the producer (consumer.batch). On a single Redis the
ZADD and the XADDs share one connection, so they run in order and survive a failover
as a prefix. On a cluster they go to different nodes: when the mark's node refuses the
ZADD (MOVED: its slot was resharded away), the entries must not be sent to the other
nodes. Before this test, producer.writer sent every node's group regardless, so the
entries of the other nodes' partitions were written above the unraised mark.

A private three-master cluster (tests.support.cluster_redis, a few seconds), gated
with the rest of tests/cluster (SEARCHSYNC_CLUSTER_TESTS=1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from searchsync.common.config import load_settings
from searchsync.common.keys import Keys
from searchsync.common.redis_client import connect_redis
from searchsync.producer.batches import build_entries
from searchsync.producer.writer import StreamWriter
from tests.cluster.test_cluster_client import move_slot, owner
from tests.support.cluster_redis import OneNodeCluster, three_node_cluster

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 8


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[OneNodeCluster]]:
    with three_node_cluster() as servers:
        yield servers


@pytest.mark.parametrize("call", ["write", "commit", "mark_reconcile"])
async def test_a_refused_high_water_mark_stops_every_entry_on_every_node(
    nodes: list[OneNodeCluster], call: str
) -> None:
    view = f"cluster_high_water_{call}_mv"
    keys = Keys(view, PARTITIONS)
    mark_node = owner(nodes, keys.high_water)
    elsewhere = [n for n in range(PARTITIONS) if owner(nodes, keys.stream(n)) is not mark_node]
    assert elsewhere, "some partition's stream must be on another node than the mark"
    settings = load_settings(
        {
            "REDIS_URL": f"redis://127.0.0.1:{nodes[0].port}/0",
            "REDIS_CLUSTER": "true",
            "VIEW_NAME": view,
            "STREAM_PARTITIONS": str(PARTITIONS),
        }
    )
    redis = connect_redis(settings)
    assert isinstance(redis, RedisCluster)
    try:
        await redis.initialize()  # the slot map now names mark_node for the mark
        target = next(n for n in nodes if n is not mark_node)
        move_slot(nodes, keys.high_water, target)  # the client's map is stale: MOVED
        writer = StreamWriter(redis, keys, progress_interval_ms=0)
        with pytest.raises(MovedError):
            if call == "write":
                docs = [(10, f"o{i}".encode(), b'{"order_id":"o%d"}' % i) for i in range(64)]
                await writer.write(build_entries(docs, PARTITIONS), high_water=10)
            elif call == "commit":
                await writer.commit(10)
            else:
                await writer.mark_reconcile(10)
        # the writer reloaded the slot map after the MOVED: these reads route right
        lengths = {n: await redis.xlen(keys.stream(n)) for n in range(PARTITIONS)}
        assert lengths == dict.fromkeys(range(PARTITIONS), 0), (
            "entries written while the high-water mark was refused"
        )
        assert await redis.get(keys.checkpoint) is None
        # the producer's retry, routed anew, writes the mark and then the entries
        if call == "commit":
            await writer.commit(10)
        elif call == "mark_reconcile":
            await writer.mark_reconcile(10)
        else:
            await writer.write(build_entries(docs, PARTITIONS), high_water=10)
        assert await writer.read_high_water() == 10
        assert all([await redis.xlen(keys.stream(n)) > 0 for n in elsewhere])
    finally:
        await redis.aclose()
