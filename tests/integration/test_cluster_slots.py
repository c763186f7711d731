"""No command or script of searchsync spans two Redis Cluster hash slots.

A private one-node cluster (tests.support.cluster_redis: ``--cluster-enabled yes``,
every slot on the one node) refuses a command whose keys are in two slots
(CROSSSLOT) as a real cluster does, so every Redis call the producer, the consumers,
``searchsync status`` and the CLI make is run against it here, through a plain
redis-py client (one node holds every slot: no redirection to follow, so what fails
is only the layout). Key layout 1 failed here: the producer lease's acquire script
(``producer`` + ``producer:epoch``), the fenced checkpoint (``producer`` +
``checkpoint``), the consumer's fence (``lease:p<N>`` + ``attempts:p<N>``), the
replay's move (``p<N>`` + ``counts``) and the lease MGET each spanned two slots.

Costs ~2 s once for the module: a cluster node refuses writes for its first two
seconds (Redis' CLUSTER_WRITABLE_DELAY).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from searchsync.cli.main import main as cli_main
from searchsync.common import status as status_report
from searchsync.common.config import load_settings
from searchsync.common.entries import DeadLetter, decode_entry, encode_dead_letter
from searchsync.common.keys import Keys
from searchsync.common.meta import ensure_meta
from searchsync.common.partition import partition_of
from searchsync.common.readyourwrites import read_applied
from searchsync.common.redis_client import connect_redis
from searchsync.common.streams import ensure_groups
from searchsync.consumer.acks import Acker
from searchsync.consumer.attempts import Attempts, new_token, read_attempts
from searchsync.consumer.leases import Leases
from searchsync.consumer.reader import claim_pending, pending_below, read_new
from searchsync.consumer.reconcile import Reconciler
from searchsync.consumer.replay import apply_plan, parse_since, plan_partition
from searchsync.consumer.retention import trim, trim_dlq
from searchsync.producer.backpressure import read_buffers
from searchsync.producer.batches import build_entries
from searchsync.producer.lease import ProducerLease
from searchsync.producer.writer import ReplicaWaitTimeout, StreamWriter
from tests.support.cluster_redis import OneNodeCluster, one_node_cluster

pytestmark = pytest.mark.timeout(60)

PARTITIONS = 3
GROUP = "searchsync"
VIEW = "cluster_slots_mv"


@pytest.fixture(scope="module")
def cluster() -> Iterator[OneNodeCluster]:
    with one_node_cluster() as server:
        yield server


@pytest.fixture(params=["plain", "cluster"])
async def redis(cluster: OneNodeCluster, request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A single Redis's client (what fails is the server's CROSSSLOT) and the cluster
    client common.redis_client picks with REDIS_CLUSTER=auto (it refuses a cross-slot
    command itself, and routes by slot)."""
    settings = load_settings({**env(cluster), "REDIS_CLUSTER": "auto"})
    client = Redis.from_url(cluster.url) if request.param == "plain" else connect_redis(settings)
    assert isinstance(client, RedisCluster) == (request.param == "cluster")
    async with Redis.from_url(cluster.url) as admin:
        await admin.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def env(cluster: OneNodeCluster) -> dict[str, str]:
    return {
        "REDIS_URL": cluster.url,
        "VIEW_NAME": VIEW,
        "STREAM_PARTITIONS": str(PARTITIONS),
        "CONSUMER_GROUP": GROUP,
        "MZ_HOST": "127.0.0.1",
        "MZ_PORT": "1",
        "OS_HOST": "127.0.0.1",
        "OS_PORT": "1",
    }


def docs(ts: int, n: int) -> list[tuple[int, bytes, bytes | None]]:
    return [(ts, f"o{i}".encode(), b'{"order_id":"o%d"}' % i) for i in range(n)]


async def test_producer_and_consumer_keep_each_command_in_one_slot(
    redis: Redis, cluster: OneNodeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env(cluster).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    keys = Keys(VIEW, PARTITIONS)
    # start: layout record, groups
    await ensure_meta(redis, keys, settings)
    await ensure_groups(redis, keys, GROUP)

    # producer: lease (acquire = lease + epoch), write, fenced commit, reconcile marker
    lease = ProducerLease(redis, keys, "producer-a", ttl_seconds=5)
    assert await lease.try_acquire()
    assert await lease.try_acquire()  # renewal path of the same script
    writer = StreamWriter(redis, keys, progress_interval_ms=1000, lease=lambda: lease.value)
    letter = DeadLetter(ts=9, op=b"u", key=b"bad", reason="test", source="producer", doc=b"{}")
    await writer.write(build_entries(docs(10, 30), PARTITIONS), [letter], high_water=10)
    await writer.commit(11)
    await writer.mark_reconcile(11)
    assert await writer.read_checkpoint() == 11
    await lease.release()
    assert sum((await read_buffers(redis, keys, GROUP)).partitions) == 30

    # consumers: heartbeat, leases (acquire, renew, fence with attempts), read, settle
    leases = Leases(redis, keys, "consumer-a", ttl_seconds=5)
    await leases.heartbeat()
    assert all([await leases.acquire(p) for p in range(PARTITIONS)])
    assert await leases.renew(range(PARTITIONS)) == set(range(PARTITIONS))
    assert await leases.holders() == ["consumer-a"] * PARTITIONS
    acker = Acker(redis, keys, GROUP)
    token = new_token("consumer-a")
    for p in range(PARTITIONS):
        entries = await read_new(redis, keys.stream(p), GROUP, "consumer-a", 100, block=False)
        ids = [entry.id for entry in entries]
        assert await leases.fence(p, token, ids)
        assert await read_attempts(redis, keys.attempts(p), ids) == [0] * len(ids)
        await Attempts(redis).recover(keys.attempts(p), token)
        _, claimed = await claim_pending(
            redis, keys.stream(p), GROUP, "consumer-a", 100, attempts=keys.attempts(p)
        )
        assert {entry.id for entry in claimed} == set(ids)
        changes = sum(
            len(decoded) for e in entries if isinstance(decoded := decode_entry(e.fields), list)
        )
        still = await acker.settle(p, ids, changes, sent=ids, check_below=ids[-1])
        assert still == []
        assert await pending_below(redis, keys.stream(p), GROUP, ids[-1], 1) == []
        await acker.advance(p, 11)
    assert await Reconciler(redis, None, keys, "orders", "consumer-a").run_due() == []  # type: ignore[arg-type]

    # status (one pipeline over every slot), replay's move, retention, leaving
    report = status_report.build(
        await status_report.gather(redis, keys, GROUP),
        keys, view=VIEW, group=GROUP, now_ms=status_report.now_ms(), member_ttl_ms=5000,
    )  # fmt: skip
    assert [p.applied_ts for p in report.partitions] == [11] * PARTITIONS
    assert await read_applied(redis, keys) == dict.fromkeys(range(PARTITIONS), 11)  # wait's
    assert report.buffer == 0 and report.dlq_length == 1 and report.checkpoint == 11
    partition = partition_of(b"o1", PARTITIONS)
    plan = await plan_partition(redis, keys, GROUP, partition, parse_since("1-0"))
    await apply_plan(redis, keys, GROUP, plan)
    written: Any = await redis.hget(keys.counts(partition), keys.written_field(partition))
    assert int(written) > 0
    await trim(redis, keys.stream(partition), GROUP, 3600)
    await trim_dlq(redis, keys.dlq, 3600)
    await leases.leave(range(PARTITIONS))
    assert await leases.holders() == [None] * PARTITIONS


@pytest.mark.parametrize("mode", ["false", "auto"])
def test_the_cli_keeps_each_command_in_one_slot(
    cluster: OneNodeCluster,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {**env(cluster), "REDIS_CLUSTER": mode}.items():
        monkeypatch.setenv(name, value)
    keys = Keys(VIEW, PARTITIONS)
    client = SyncRedis.from_url(cluster.url)
    client.flushall()
    mine = partition_of(b"o1", PARTITIONS)
    for n in range(PARTITIONS):
        client.xgroup_create(keys.stream(n), GROUP, id="0", mkstream=True)
        entry_id: Any = client.xadd(
            keys.stream(n), {"ts": "5", "op": "d", "key": "o1" if n == mine else "x"}
        )
        client.xreadgroup(GROUP, "c", {keys.stream(n): ">"})
        client.xack(keys.stream(n), GROUP, entry_id)
        client.set(keys.applied(n), 10)
    letter = DeadLetter(ts=9, op=b"u", key=b"bad", reason="test", source="producer", doc=b"{}")
    client.xadd(keys.dlq, encode_dead_letter(letter))  # type: ignore[arg-type]
    client.close()

    def cli(*argv: str) -> tuple[int, dict[str, Any]]:
        with pytest.raises(SystemExit) as done:
            cli_main([*argv, "--json"])
        out, err = capsys.readouterr()
        assert "CROSSSLOT" not in err and "same slot" not in err, err
        assert isinstance(done.value.code, int)
        return done.value.code, json.loads(out.strip().splitlines()[-1]) if out.strip() else {}

    assert cli("status")[0] == 0
    assert cli("dlq", "list")[0] == 0
    replayed = cli("replay", "--since", "1-0", "--yes")
    assert replayed[0] == 0, replayed
    # the replayed entries are delivered again, not acknowledged: purge-key keeps o1's
    assert cli("purge-key", "o1", "--yes")[0] == 1
    assert cli("dlq", "purge", "--yes")[0] == 0
    code, moved = cli("migrate-layout", "--yes")
    assert code == 0 and moved["migrated"] is False


async def test_on_a_cluster_each_nodes_round_trip_waits_for_its_replicas(redis: Redis) -> None:
    """REDIS_WAIT_REPLICAS through both clients: the one node has no replica, so a write
    asking for one raises ReplicaWaitTimeout once the WAIT timeout passes."""
    writer = StreamWriter(
        redis, Keys(VIEW, PARTITIONS), progress_interval_ms=1000, wait_replicas=1,
        wait_timeout_ms=50,
    )  # fmt: skip
    with pytest.raises(ReplicaWaitTimeout, match="0 of 1"):
        await writer.write(build_entries(docs(10, 5), PARTITIONS), high_water=10)
