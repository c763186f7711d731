"""The product's Redis Cluster client on three masters: partitions on different nodes,
the producer's round trip routed per node, and a slot moved under a running pipeline.

A private three-master cluster (tests.support.cluster_redis.three_node_cluster, no
replicas; a few seconds), not the cluster devstack: this is about routing and MOVED,
the devstack's failover tests are about replicas. Gated with the rest of tests/cluster
(scripts/test-cluster, SEARCHSYNC_CLUSTER_TESTS=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError

from searchsync.common import status as status_report
from searchsync.common.config import load_settings
from searchsync.common.entries import decode_entry
from searchsync.common.errors import is_transient
from searchsync.common.keys import Keys
from searchsync.common.meta import ensure_meta
from searchsync.common.redis_client import connect_redis
from searchsync.common.streams import ensure_groups
from searchsync.consumer.acks import Acker
from searchsync.consumer.leases import Leases
from searchsync.consumer.reader import read_new
from searchsync.producer.batches import build_entries
from searchsync.producer.lease import ProducerLease
from searchsync.producer.writer import StreamWriter
from tests.support.cluster_redis import OneNodeCluster, three_node_cluster

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 8
GROUP = "searchsync"
VIEW = "cluster_client_mv"


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[OneNodeCluster]]:
    with three_node_cluster() as servers:
        yield servers


def owner(servers: list[OneNodeCluster], key: str) -> OneNodeCluster:
    slot = key_slot(key.encode())
    ranges = ((0, 5460), (5461, 10922), (10923, 16383))
    return next(s for s, (lo, hi) in zip(servers, ranges, strict=True) if lo <= slot <= hi)


def move_slot(servers: list[OneNodeCluster], key: str, target: OneNodeCluster) -> None:
    """Migrate the slot of ``key`` with all its keys to ``target``, as redis-cli
    --cluster reshard does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE on every node)."""
    source = owner(servers, key)
    slot = key_slot(key.encode())
    src = sync_redis.Redis(port=source.port)
    dst = sync_redis.Redis(port=target.port)
    try:
        src_id, dst_id = (c.execute_command("CLUSTER", "MYID") for c in (src, dst))  # type: ignore[no-untyped-call]
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)  # type: ignore[no-untyped-call]
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)  # type: ignore[no-untyped-call]
        names: Any = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)  # type: ignore[no-untyped-call]
        if names:
            src.execute_command(  # type: ignore[no-untyped-call]
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *names
            )
        for server in servers:
            client = sync_redis.Redis(port=server.port)
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)  # type: ignore[no-untyped-call]
            client.close()
    finally:
        src.close()
        dst.close()


def changes_of(entries: list[Any]) -> int:
    return sum(len(d) for e in entries if isinstance(d := decode_entry(e.fields), list))


async def test_partitions_spread_and_a_moved_slot_only_replays(
    nodes: list[OneNodeCluster],
) -> None:
    settings = load_settings(
        {
            "REDIS_URL": f"redis://127.0.0.1:{nodes[0].port}/0",
            "REDIS_CLUSTER": "auto",
            "VIEW_NAME": VIEW,
            "STREAM_PARTITIONS": str(PARTITIONS),
        }
    )
    redis = connect_redis(settings)
    assert isinstance(redis, RedisCluster)
    keys = Keys(VIEW, PARTITIONS)
    assert len({owner(nodes, keys.stream(n)).port for n in range(PARTITIONS)}) >= 2
    try:
        await ensure_meta(redis, keys, settings)
        await ensure_groups(redis, keys, GROUP)
        lease = ProducerLease(redis, keys, "producer-a", ttl_seconds=10)
        assert await lease.try_acquire()
        writer = StreamWriter(redis, keys, progress_interval_ms=1, lease=lambda: lease.value)
        docs = [(10, f"o{i}".encode(), b'{"order_id":"o%d"}' % i) for i in range(200)]
        await writer.write(build_entries(docs, PARTITIONS), high_water=10)
        await writer.commit(11)

        # a slot moves (resharding): the writer's map is stale; its round trip fails
        # (MOVED, transient: the producer resumes from the checkpoint) and the next works
        moved_partition = 0
        target = next(n for n in nodes if n is not owner(nodes, keys.stream(moved_partition)))
        move_slot(nodes, keys.stream(moved_partition), target)
        again = [(12, b"late", b'{"order_id":"late"}')]
        entries = [e for e in build_entries(docs + again, PARTITIONS) if e.partition == 0]
        try:
            await writer.write(entries, high_water=12)
            failed: BaseException | None = None
        except MovedError as error:
            failed = error
        assert failed is not None and is_transient(failed)
        await writer.write(entries, high_water=12)  # the replay, routed anew
        await writer.commit(13)
        assert await writer.read_checkpoint() == 13

        # consumers through the same client: leases, reads, settles; another slot moves
        # first, unknown to the client: it follows the MOVED replies itself
        target = next(n for n in nodes if n is not owner(nodes, keys.stream(1)))
        move_slot(nodes, keys.stream(1), target)
        leases = Leases(redis, keys, "consumer-a", ttl_seconds=10)
        read = await consume_all(redis, keys, leases)
        assert read == 200 + changes_of_written(entries)  # p0's changes twice: a replay
        assert await leases.renew(range(PARTITIONS)) == set(range(PARTITIONS))
        report = status_report.build(
            await status_report.gather(redis, keys, GROUP),
            keys, view=VIEW, group=GROUP, now_ms=status_report.now_ms(), member_ttl_ms=10_000,
        )  # fmt: skip
        assert report.buffer == 0 and report.checkpoint == 13
        assert [p.applied_ts for p in report.partitions] == [11] * PARTITIONS
        await leases.leave(range(PARTITIONS))
        await lease.release()
    finally:
        await redis.aclose()


def changes_of_written(entries: list[Any]) -> int:
    return sum(entry.changes for entry in entries)


async def consume_all(redis: Any, keys: Keys, leases: Leases) -> int:
    """One consumer takes every partition, reads, settles and advances; the changes read."""
    await leases.heartbeat()
    acker = Acker(redis, keys, GROUP)
    read = 0
    for p in range(PARTITIONS):
        assert await leases.acquire(p)
        got = await read_new(redis, keys.stream(p), GROUP, "consumer-a", 1000, block=False)
        ids = [e.id for e in got]
        assert await leases.fence(p, "t", ids)
        await acker.settle(p, ids, changes_of(got), sent=ids)
        await acker.advance(p, 11)
        read += changes_of(got)
    return read
