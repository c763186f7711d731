"""A master killed under a running producer: its replica takes over, the producer's
writes fail meanwhile (transient) and are replayed, and with REDIS_WAIT_REPLICAS=1
nothing below the checkpoint is missing afterwards. With WAIT 1 the promoted replica,
which has no replica of its own, refuses the producer's entries (ReplicaWaitTimeout)
until the dead master is back as its replica: durability over availability.

A private cluster of three masters and three replicas (tests.support.cluster_redis,
cluster-node-timeout 1 s; ~3 s to start), not the cluster devstack: no OpenSearch is
needed. Gated with the rest of tests/cluster (scripts/test-cluster).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.crc import key_slot

from searchsync.common.config import load_settings
from searchsync.common.entries import decode_entry
from searchsync.common.errors import is_transient
from searchsync.common.keys import Keys
from searchsync.common.redis_client import connect_redis
from searchsync.common.streams import ensure_groups
from searchsync.producer.batches import build_entries
from searchsync.producer.lease import ProducerLease
from searchsync.producer.writer import StreamWriter
from tests.support.cluster_redis import OneNodeCluster, three_node_cluster

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 6
VIEW = "cluster_failover_mv"
GROUP = "searchsync"


def master_of(servers: list[OneNodeCluster], key: str) -> OneNodeCluster:
    slot = key_slot(key.encode())
    ranges = ((0, 5460), (5461, 10922), (10923, 16383))
    return next(s for s, (lo, hi) in zip(servers, ranges, strict=False) if lo <= slot <= hi)


async def test_a_master_killed_mid_write_loses_nothing_below_the_checkpoint() -> None:
    with three_node_cluster(replicas=True, node_timeout_ms=1000) as servers:
        keys = Keys(VIEW, PARTITIONS)
        victim = master_of(servers, keys.stream(0))
        entry = next(s for s in servers[:3] if s is not victim)  # the client's first address
        settings = load_settings(
            {
                "REDIS_URL": f"redis://127.0.0.1:{entry.port}/0",
                "REDIS_CLUSTER": "true",
                "VIEW_NAME": VIEW,
                "STREAM_PARTITIONS": str(PARTITIONS),
            }
        )
        redis = connect_redis(settings, socket_timeout=2.0)
        try:
            await ensure_groups(redis, keys, GROUP)
            lease = ProducerLease(redis, keys, "producer-a", ttl_seconds=30)
            assert await lease.try_acquire()
            writer = StreamWriter(
                redis, keys, progress_interval_ms=1, lease=lambda: lease.value,
                wait_replicas=1, wait_timeout_ms=500,
            )  # fmt: skip
            failures: list[BaseException] = []
            written: set[tuple[int, bytes]] = set()
            started = killed = time.monotonic()
            restarted = False
            for ts in range(1, 61):
                if ts == 10:
                    victim.kill()  # SIGKILL: its replica is promoted after the node timeout
                    killed = time.monotonic()
                batch = [(ts, f"k{ts}-{i}".encode(), b"{}") for i in range(20)]
                while True:  # as the producer does: back off, resume from the checkpoint
                    try:
                        await writer.write(build_entries(batch, PARTITIONS), high_water=ts)
                        await writer.commit(ts + 1)
                        break
                    except Exception as error:
                        assert is_transient(error), repr(error)
                        failures.append(error)
                        assert time.monotonic() - started < 90, failures[-3:]
                        # the promoted replica has no replica of its own: WAIT 1 cannot be
                        # met on it (writes there stay refused) until the dead master is
                        # back, as a replica: its supervisor restarts it
                        if not restarted and time.monotonic() - killed > 4:
                            victim.start()
                            restarted = True
                        await asyncio.sleep(0.2)
                written.update((ts, key) for ts_, key, _ in batch if ts_ == ts)
            checkpoint = await writer.read_checkpoint()
            stored = await stored_changes(redis, keys)
        finally:
            await redis.aclose()
    assert failures and restarted, "the kill was never noticed"
    kinds = {type(error).__name__ for error in failures}
    print(f"failures while failing over: {len(failures)}, {sorted(kinds)}")
    assert "ReplicaWaitTimeout" in kinds, kinds  # refused while no replica could hold them
    assert checkpoint == 61
    missing = {change for change in written if change not in stored}
    assert not missing, sorted(missing)[:10]


async def stored_changes(redis: Any, keys: Keys) -> set[tuple[int, bytes]]:
    found: set[tuple[int, bytes]] = set()
    for stream in keys.streams():
        for _, fields in await redis.xrange(stream):
            decoded = decode_entry(fields)
            if isinstance(decoded, list):
                found.update((change.ts, change.key) for change in decoded)
    return found
