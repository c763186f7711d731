"""REDIS_WAIT_REPLICAS: the producer's entries are on a replica before the checkpoint
can pass them (producer.writer: WAIT after each round trip that adds entries).

Services: two private redis-servers, a master and its replica (REPLICAOF), started
here (~1 s). With the replica in sync a write returns once it holds the entries; with
the replica gone the same write raises ReplicaWaitTimeout (transient: the producer
replays from its checkpoint) after REDIS_WAIT_TIMEOUT_MS, counted in
searchsync_producer_replica_wait_timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from searchsync.common.errors import is_transient
from searchsync.common.keys import Keys
from searchsync.producer.batches import build_entries
from searchsync.producer.metrics import ProducerMetrics
from searchsync.producer.writer import ReplicaWaitTimeout, StreamWriter
from tests.support.services import PrivateRedis, wait_for

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 2


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    master, replica = PrivateRedis(tmp_path / "master"), PrivateRedis(tmp_path / "replica")
    for server in (master, replica):
        server.directory.mkdir()
        server.start()
    client = sync_redis.Redis(port=replica.port)
    try:
        with sync_redis.Redis(port=master.port) as primary:
            primary.config_set("repl-diskless-sync-delay", 0)  # default: 5 s before a sync
        client.replicaof("127.0.0.1", master.port)
        with sync_redis.Redis(port=master.port) as primary:
            wait_for(
                lambda: "online" in str(primary.info("replication").get("slave0", "")),
                10,
                "the replica to sync (online on the master)",
            )
            # a replica acknowledges its first offset up to ~1 s after the sync
            primary.set("warm", "1")
            assert primary.execute_command("WAIT", 1, 5000) == 1
        yield master, replica
    finally:
        client.close()
        replica.kill()
        master.kill()


async def test_a_write_waits_for_the_replica_and_fails_without_it(
    pair: tuple[PrivateRedis, PrivateRedis],
) -> None:
    master, replica = pair
    keys = Keys("replica_wait_mv", PARTITIONS)
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry, keys.view)
    client = Redis(port=master.port)
    writer = StreamWriter(
        client, keys, progress_interval_ms=1000, metrics=metrics,
        wait_replicas=1, wait_timeout_ms=300,
    )  # fmt: skip
    docs = [(10, f"o{i}".encode(), b"{}") for i in range(20)]
    try:
        await writer.write(build_entries(docs, PARTITIONS), high_water=10)
        on_replica = sync_redis.Redis(port=replica.port)
        # WAIT returned: the replica holds every entry already, no polling needed
        assert sum(on_replica.xlen(keys.stream(n)) for n in range(PARTITIONS)) > 0
        on_replica.close()
        replica.kill()
        with pytest.raises(ReplicaWaitTimeout, match="0 of 1 Redis replicas") as caught:
            await writer.write(build_entries([(11, b"o1", None)], PARTITIONS), high_water=11)
        assert is_transient(caught.value)
        timeouts = registry.get_sample_value(
            "searchsync_producer_replica_wait_timeouts_total", {"view": keys.view}
        )
        assert timeouts == 1
    finally:
        await client.aclose()
