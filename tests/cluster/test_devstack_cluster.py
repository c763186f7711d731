"""devstack/up --cluster, for real: a Redis Cluster of 3 masters + 3 replicas and a
3-node OpenSearch cluster come up, survive a kill -9 of one of their nodes, are
repaired by running up again, and stop with down --cluster.

The tests run in file order on one cluster (module fixture). Failover times are
measured and printed (and written to .devstack/cluster/measurements.json), never
asserted: the waits only have generous limits, as other tests share the 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from tests.cluster.stack import (
    CLUSTER_DIR,
    OS_PORTS,
    REDIS_PORTS,
    RedisNode,
    cluster_env,
    cluster_info,
    cluster_nodes,
    devstack,
    opensearch,
    pid_of,
    poll,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

INDEX = "searchsync-cluster-devstack-check"
MEASURED: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    started = time.monotonic()
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    MEASURED["up_seconds"] = round(time.monotonic() - started, 1)
    MEASURED["up_log"] = [
        line
        for line in up.stderr.splitlines()
        if "ready" in line or "green" in line or " up in " in line
    ]
    yield
    devstack("down")
    (CLUSTER_DIR / "measurements.json").write_text(json.dumps(MEASURED, indent=2) + "\n")
    print("\ncluster devstack measurements:", json.dumps(MEASURED, indent=2))


def masters_with_replicas(port: int) -> dict[int, list[int]]:
    """Live masters holding slots → the ports of their live replicas."""
    nodes = [n for n in cluster_nodes(port) if not n.failed]
    by_id = {n.node_id: n for n in nodes}
    masters: dict[int, list[int]] = {n.port: [] for n in nodes if n.is_master and n.slots}
    for node in nodes:
        if not node.is_master and node.master_id in by_id:
            masters.setdefault(by_id[node.master_id].port, []).append(node.port)
    return masters


def redis_healthy() -> bool:
    """Every node says cluster_state:ok and 3 masters have one replica each."""
    states = {cluster_info(port)["cluster_state"] for port in REDIS_PORTS}
    masters = masters_with_replicas(REDIS_PORTS[0])
    return states == {"ok"} and len(masters) == 3 and all(len(r) == 1 for r in masters.values())


def test_status_and_env_describe_the_running_cluster() -> None:
    status = devstack("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "redis cluster: ok" in status.stdout
    assert "opensearch cluster: green, 3 nodes" in status.stdout
    env = cluster_env()
    assert env["REDIS_URL"] == "redis://127.0.0.1:7001/0"
    assert env["REDIS_CLUSTER_NODES"].split(",") == [f"127.0.0.1:{p}" for p in REDIS_PORTS]
    assert env["OS_HOSTS"] == "127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203"
    # the shared PostgreSQL and emulator, as the single-node env has them
    for name in ("PGHOST", "PGPORT", "DATABASE_URL", "MZ_HOST", "MZ_PORT", "MZ_SSLMODE"):
        assert env[name], name


def test_redis_is_a_cluster_of_three_masters_with_a_replica_each() -> None:
    assert redis_healthy()
    masters = masters_with_replicas(7001)
    slots = sorted(
        tuple(map(int, r.split("-"))) for n in cluster_nodes(7001) if n.is_master for r in n.slots
    )
    assert slots[0][0] == 0 and slots[-1][1] == 16383
    assert sum(end - start + 1 for start, end in slots) == 16384
    for port in REDIS_PORTS:
        config = cluster_info(port)
        assert config["cluster_known_nodes"] == "6", port
    # AOF on, everysec, as the single-node devstack
    for port in (*masters, *(r for rs in masters.values() for r in rs)):
        with redis.Redis(port=port, decode_responses=True) as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert client.config_get("cluster-node-timeout") == {"cluster-node-timeout": "2000"}


def test_opensearch_is_a_green_cluster_of_three_nodes() -> None:
    for port in OS_PORTS:
        health = opensearch(port, "/_cluster/health")
        assert health["status"] == "green", health
        assert health["number_of_nodes"] == 3, health
        assert health["cluster_name"] == "searchsync-cluster"
    names = sorted(node["name"] for node in opensearch(9201, "/_cat/nodes?format=json"))
    assert names == [f"searchsync-cluster-{i}" for i in (1, 2, 3)]


def test_a_killed_redis_master_is_replaced_by_its_replica() -> None:
    masters = masters_with_replicas(7001)
    victim = min(masters)
    (replica,) = masters[victim]
    survivor = next(p for p in masters if p != victim)
    pidfile = CLUSTER_DIR / f"redis-{REDIS_PORTS.index(victim) + 1}" / "redis.pid"
    killed = time.monotonic()
    os.kill(pid_of(pidfile), signal.SIGKILL)

    def node(port: int) -> RedisNode:
        return next(n for n in cluster_nodes(survivor) if n.port == port)

    # the survivor's own suspicion (PFAIL, "fail?": no answer for cluster-node-timeout),
    # then FAIL (a majority of masters agree), then the replica's election
    poll(lambda: bool(node(victim).flags & {"fail?", "fail"}), timeout=60)
    suspected = time.monotonic()
    poll(lambda: node(victim).failed, timeout=60)
    detected = time.monotonic()
    poll(lambda: node(replica).is_master and bool(node(replica).slots), timeout=60)
    promoted = time.monotonic()
    poll(
        lambda: all(cluster_info(p)["cluster_state"] == "ok" for p in REDIS_PORTS if p != victim),
        60,
    )
    ok = time.monotonic()
    MEASURED["redis_failover"] = {
        "killed_master": victim,
        "promoted_replica": replica,
        "cluster_node_timeout_ms": 2000,
        "kill_to_pfail_s": round(suspected - killed, 2),
        "kill_to_fail_s": round(detected - killed, 2),
        "fail_to_promoted_s": round(promoted - detected, 2),
        "kill_to_promoted_s": round(promoted - killed, 2),
        "kill_to_cluster_state_ok_s": round(ok - killed, 2),
    }
    # a write to a key of the promoted master's slots is accepted again
    with redis.cluster.RedisCluster(host="127.0.0.1", port=survivor) as client:
        assert client.set("searchsync-cluster-devstack-check", "1") is True
        assert client.delete("searchsync-cluster-devstack-check") == 1
    assert len(masters_with_replicas(survivor)) == 3


def test_up_again_brings_the_killed_node_back_as_a_replica() -> None:
    status = devstack("status")
    assert status.returncode == 1 and "stopped" in status.stdout, status.stdout
    started = time.monotonic()
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    poll(redis_healthy, timeout=60, interval=0.2)
    MEASURED["up_after_redis_kill_s"] = round(time.monotonic() - started, 1)
    assert devstack("status").returncode == 0


def test_a_killed_opensearch_node_leaves_two_serving() -> None:
    opensearch(
        9201,
        f"/{INDEX}",
        "PUT",
        {"settings": {"number_of_shards": 3, "number_of_replicas": 1}},
    )
    poll(lambda: opensearch(9201, "/_cluster/health")["status"] == "green", timeout=120)
    manager = opensearch(9201, "/_cat/cluster_manager?format=json")[0]["node"]
    number = int(manager.rsplit("-", 1)[1])
    survivor = next(p for i, p in enumerate(OS_PORTS, 1) if i != number)
    killed = time.monotonic()
    os.kill(pid_of(CLUSTER_DIR / f"opensearch-{number}" / "opensearch.pid"), signal.SIGKILL)

    def two_nodes() -> dict[str, Any] | None:
        health: dict[str, Any] = opensearch(survivor, "/_cluster/health?timeout=1s")
        if health["number_of_nodes"] == 2 and health["status"] in ("yellow", "green"):
            return health
        return None

    health = poll(two_nodes, timeout=180, interval=0.2)
    elected = time.monotonic()
    new_manager = opensearch(survivor, "/_cat/cluster_manager?format=json")[0]["node"]
    assert new_manager != manager
    # the index still takes writes and answers reads with one node gone
    opensearch(survivor, f"/{INDEX}/_doc/1?refresh=true", "PUT", {"ok": True})
    assert opensearch(survivor, f"/{INDEX}/_doc/1")["found"] is True
    MEASURED["opensearch_node_kill"] = {
        "killed_node": manager,
        "was_cluster_manager": True,
        "new_cluster_manager": new_manager,
        "kill_to_two_nodes_serving_s": round(elected - killed, 2),
        "status_then": health["status"],
    }


def test_up_again_brings_the_opensearch_cluster_back_to_three_green_nodes() -> None:
    started = time.monotonic()
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    MEASURED["up_after_opensearch_kill_s"] = round(time.monotonic() - started, 1)
    health = opensearch(9201, "/_cluster/health")
    assert (health["status"], health["number_of_nodes"]) == ("green", 3)
    opensearch(9201, f"/{INDEX}", "DELETE")


def test_down_stops_every_node() -> None:
    started = time.monotonic()
    down = devstack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    MEASURED["down_seconds"] = round(time.monotonic() - started, 1)
    status = devstack("status")
    assert status.returncode == 1
    assert status.stdout.count("stopped") == 9, status.stdout
    for port in (*REDIS_PORTS, *OS_PORTS):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
