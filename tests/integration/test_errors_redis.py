"""common/errors.classify on what a real Redis answers, as redis-py raises it.

Services: a private redis-server (Debian's, started here), and two in cluster mode.
Each condition is made for real — memory full, a replica, a flushed script cache, a
lost consumer group, a key of another type, an ACL user without the command, a slot
migrating, moved or served by no node — and the error redis-py raises is
classified: the conditions a server recovers from are transient (the producer and the
consumers back off and retry), the ones a retry cannot fix are fatal (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions as redis_errors

from searchsync.common.errors import Failure, classify
from tests.support.cluster_redis import OneNodeCluster, one_node_cluster
from tests.support.services import PrivateRedis, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[redis.Redis]:
    private = PrivateRedis(tmp_path)
    private.start()
    client = redis.Redis(port=private.port)
    try:
        yield client
    finally:
        client.close()
        private.kill()


def raised(call: Callable[[], object]) -> redis_errors.RedisError:
    with pytest.raises(redis_errors.RedisError) as caught:
        call()
    return caught.value


def test_conditions_redis_recovers_from_are_transient(server: redis.Redis) -> None:
    server.config_set("maxmemory", 1)  # full: every write refused until memory is freed
    oom = raised(lambda: server.xadd("s", {"f": "v"}))
    server.config_set("maxmemory", 0)
    noscript = raised(lambda: server.evalsha("0" * 40, 0))
    nogroup = raised(lambda: server.xreadgroup("searchsync", "c1", {"s": ">"}))
    server.replicaof("127.0.0.1", "1")  # a replica of nobody: read-only
    readonly = raised(lambda: server.set("k", "v"))
    server.replicaof("NO", "ONE")
    for error in (oom, noscript, nogroup, readonly):
        assert classify(error) is Failure.TRANSIENT, repr(error)


def test_conditions_a_retry_cannot_fix_are_fatal(server: redis.Redis) -> None:
    server.set("not-a-stream", "x")
    wrongtype = raised(lambda: server.xadd("not-a-stream", {"f": "v"}))
    server.acl_setuser("reader", enabled=True, passwords=["+pw"], commands=["+get"], keys=["*"])
    reader = redis.Redis(port=server.connection_pool.connection_kwargs["port"],
                         username="reader", password="pw")  # fmt: skip
    try:
        noperm = raised(lambda: reader.xadd("s", {"f": "v"}))
    finally:
        reader.close()
    for error in (wrongtype, noperm):
        assert classify(error) is Failure.FATAL, repr(error)


def test_cluster_redirections_rehashing_and_an_unserved_slot_are_transient() -> None:
    """What a cluster answers while slots move or a node is lost, made for real on two
    cluster-mode nodes: ASK (a slot migrating away), TRYAGAIN (a multi-key command
    during the move), MOVED (the slot moved: the client's map is stale), CLUSTERDOWN
    (no node serves the slot). A client that meets them retries after refreshing its
    map, as after a failover; a cross-slot command is a bug: fatal."""
    with one_node_cluster() as owner, closing(OneNodeCluster(every_slot=False)) as other:
        other.start()
        client = redis.Redis(port=owner.port)
        try:
            cluster(client, "CLUSTER", "MEET", "127.0.0.1", other.port, other.bus_port)
            other_id = cluster(redis.Redis(port=other.port), "CLUSTER", "MYID")
            wait_for(lambda: _knows(client, other_id), 10, "the nodes to meet")
            client.set("{m}a", "1")
            slot_m = cluster(client, "CLUSTER", "KEYSLOT", "{m}")
            cluster(client, "CLUSTER", "SETSLOT", slot_m, "MIGRATING", other_id)
            ask = raised(lambda: client.get("{m}missing"))
            tryagain = raised(lambda: client.mget("{m}a", "{m}missing"))
            slot_n = cluster(client, "CLUSTER", "KEYSLOT", "{n}")
            cluster(client, "CLUSTER", "SETSLOT", slot_n, "NODE", other_id)
            moved = raised(lambda: client.get("{n}k"))
            slot_d = cluster(client, "CLUSTER", "KEYSLOT", "{d}")
            cluster(client, "CLUSTER", "DELSLOTS", slot_d)
            down = raised(lambda: client.get("{d}k"))
            crossslot = raised(lambda: client.mget("{x}a", "{y}b"))
        finally:
            client.close()
    assert isinstance(ask, redis_errors.AskError) and not isinstance(ask, redis_errors.MovedError)
    assert isinstance(moved, redis_errors.MovedError)
    assert isinstance(tryagain, redis_errors.TryAgainError)
    assert isinstance(down, redis_errors.ClusterDownError)
    for error in (ask, moved, tryagain, down):
        assert classify(error) is Failure.TRANSIENT, repr(error)
    assert classify(crossslot) is Failure.FATAL, repr(crossslot)


def _knows(client: redis.Redis, node_id: object) -> bool:
    nodes = str(cluster(client, "CLUSTER", "NODES"))
    key = node_id.decode() if isinstance(node_id, bytes) else str(node_id)
    return any(key in line and "handshake" not in line for line in nodes.splitlines())


def cluster(client: redis.Redis, *args: object) -> Any:
    """One CLUSTER subcommand (redis-py types execute_command loosely)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]
