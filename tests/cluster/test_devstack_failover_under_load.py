"""Failover under load on the cluster devstack (issue 11 point 3): the real producer and
consumers over `devstack/up --cluster`'s Redis Cluster (3 masters + 3 replicas,
REDIS_WAIT_REPLICAS=1) and 3-node OpenSearch (the alias's index at 1 replica,
OS_INDEX_REPLICAS=auto), the FreshMart load generator writing to PostgreSQL:

a. kill -9 a Redis master, its replica is promoted, the dead node is started again
   (devstack/up --cluster: it rejoins as the new master's replica, which WAIT 1 needs),
   then the same for a second master; `searchsync verify` at zero drift;
b. kill -9 the OpenSearch data node holding the index's primary; the replica is
   promoted; `searchsync verify` at zero drift.

Only the cluster devstack's nodes (ports 7001-7006, 9201-9203, their pid files under
.devstack/cluster) are killed. PostgreSQL and the emulator are a private schema and
emulator (devstack.harness); the producer's and consumers' Redis and OpenSearch are the
cluster devstack's. Timings are measured and written to .devstack/cluster/measurements.json
(key "failover_under_load"), never asserted. Gated with the rest of tests/cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
from opensearchpy import OpenSearch

from devstack.harness.services import free_port
from searchsync.common.keys import Keys
from tests.cluster.stack import (
    CLUSTER_DIR,
    OS_PORTS,
    REDIS_PORTS,
    cluster_info,
    cluster_nodes,
    devstack,
    opensearch,
    pid_of,
    poll,
)
from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import start_load

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

MEASURED: dict[str, Any] = {}


class DevstackRedis:
    """Stands in for the Stack's private redis-server: the cluster devstack's, which the
    Stack must not stop. ``url`` names one live node (the client finds the others)."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        """The cluster devstack outlives the test."""


class RedisNodeView:
    """A master as CLUSTER NODES names it."""

    def __init__(self, node_id: str, slots: tuple[str, ...]) -> None:
        self.node_id = node_id
        self.slots = slots


def masters() -> dict[int, RedisNodeView]:
    """Live masters holding slots, by port, as a live node sees the cluster."""
    for port in REDIS_PORTS:
        try:
            nodes = cluster_nodes(port)
        except (redis.RedisError, OSError):
            continue
        return {
            n.port: RedisNodeView(n.node_id, n.slots)
            for n in nodes
            if n.is_master and n.slots and not n.failed
        }
    raise AssertionError("no cluster devstack Redis node answers")


def redis_healthy() -> bool:
    """Every node says cluster_state:ok and 3 masters have one live replica each."""
    if {cluster_info(port)["cluster_state"] for port in REDIS_PORTS} != {"ok"}:
        return False
    nodes = [n for n in cluster_nodes(REDIS_PORTS[0]) if not n.failed]
    live = {n.node_id for n in nodes if n.is_master and n.slots}
    replicas = [n.master_id or "" for n in nodes if not n.is_master]
    return len(live) == 3 and sorted(replicas) == sorted(live)


def delete_view_keys(pattern: str) -> int:
    """Every key matching ``pattern`` on every master: a previous run's streams."""
    deleted = 0
    for port in masters():
        with redis.Redis(port=port) as client:
            for key in client.scan_iter(match=pattern, count=1000):
                deleted += int(client.delete(key))
    return deleted


def kill_redis(port: int) -> float:
    os.kill(pid_of(CLUSTER_DIR / f"redis-{REDIS_PORTS.index(port) + 1}" / "redis.pid"), 9)
    return time.monotonic()


def producer_counter(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(rf"^{name}_total\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(v) for v in found)


def status_or_none(pipe: Pipeline) -> dict[str, Any] | None:
    """`searchsync status --json`, or None while the cluster cannot answer it."""
    result = pipe.cli("status", "--json")
    if result.returncode != 0:
        return None
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def frontier(status: dict[str, Any]) -> tuple[int, int]:
    """(checkpoint, the lowest applied frontier of the partitions)."""
    applied = [p["applied_ts"] or 0 for p in status["partitions"]]
    return status["checkpoint"] or 0, min(applied)


def wait_resumed(pipe: Pipeline, before: int, killed: float) -> float:
    """Seconds from ``killed`` until the checkpoint and every partition's applied frontier
    are past ``before`` (the checkpoint seen just before the kill): the producer writes
    (its WAITs answered) and every consumer applies again."""

    def past() -> bool:
        status = status_or_none(pipe)
        return status is not None and min(frontier(status)) > before

    poll(past, timeout=240, interval=0.2)
    return round(time.monotonic() - killed, 2)


@pytest.fixture(scope="module")
def pipe() -> Iterator[Pipeline]:
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    poll(redis_healthy, timeout=120, interval=0.2)
    poll(lambda: opensearch(9201, "/_cluster/health")["status"] == "green", timeout=120)
    keys = Keys("orders_search_source_mv", 6)
    delete_view_keys(keys.pattern)
    # the clients' first address: a live node that is not a master now (never a victim)
    entry = next(p for p in REDIS_PORTS if p not in masters())
    with pipeline_of(orders=300, realistic=True, partitions=6) as built:
        built.stack.redis.close()  # the Stack's private redis-server: the cluster's instead
        built.stack.redis = DevstackRedis(entry)  # type: ignore[assignment]
        built.os_env = {"OS_HOST": "127.0.0.1", "OS_PORT": "9201"}
        built.search.close()
        built.search = OpenSearch(hosts=[{"host": "127.0.0.1", "port": 9201}])
        try:
            yield built
        finally:
            for process in built.stack.producers:
                process.close()
            delete_view_keys(keys.pattern)
    down = devstack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    path = CLUSTER_DIR / "measurements.json"
    measured = json.loads(path.read_text()) if path.exists() else {}
    measured["failover_under_load"] = MEASURED
    path.write_text(json.dumps(measured, indent=2) + "\n")
    print("\nfailover under load:", json.dumps(MEASURED, indent=2))


@pytest.fixture(scope="module")
def metrics_port(pipe: Pipeline) -> int:
    """The index at 1 replica (auto on 3 data nodes), consumers on a node without the
    primary, one producer with REDIS_WAIT_REPLICAS=1 and its metrics; synced."""
    created = pipe.cli("index", "create", "--json")
    assert created.returncode == 0, created.stderr
    index = json.loads(created.stdout)["index"]
    settings = opensearch(9201, f"/{index}/_settings?flat_settings=true")
    assert settings[index]["settings"]["index.number_of_replicas"] == "1", settings
    poll(lambda: opensearch(9201, f"/_cluster/health/{index}")["status"] == "green", 120)
    primary = primary_node(index)
    # the consumers' one OpenSearch address must survive test b's kill of the primary's node
    port = next(p for i, p in enumerate(OS_PORTS, 1) if f"searchsync-cluster-{i}" != primary)
    pipe.os_env = {"OS_HOST": "127.0.0.1", "OS_PORT": str(port)}
    pipe.search.close()
    pipe.search = OpenSearch(hosts=[{"host": "127.0.0.1", "port": port}])
    MEASURED["index"] = {"name": index, "number_of_replicas": 1, "primary_on": primary}
    wait = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500", "REDIS_CLUSTER": "true"}
    metrics = free_port()
    pipe.stack.producer(**pipe.env(**wait, METRICS_PORT=str(metrics)))
    pipe.consumer("c1", **wait)
    pipe.consumer("c2", **wait)
    pipe.wait_synced(timeout=180)
    return metrics


def primary_node(index: str) -> str:
    shards = opensearch(9201, f"/_cat/shards/{index}?format=json")
    (primary,) = [s["node"] for s in shards if s["prirep"] == "p" and s["state"] == "STARTED"]
    return str(primary)


def fail_over_one_master(pipe: Pipeline, victim: int, timings: list[dict[str, Any]]) -> None:
    """kill -9 ``victim`` under load; measure FAIL, promotion, the pipeline resumed; bring
    the dead node back (devstack/up --cluster) as its successor's replica."""
    nodes = {n.port: n for n in cluster_nodes(victim)}
    (replica,) = [n.port for n in nodes.values() if n.master_id == nodes[victim].node_id]
    observer = next(p for p in masters() if p != victim)
    before = status_or_none(pipe)
    assert before is not None
    checkpoint = frontier(before)[0]
    killed = kill_redis(victim)

    def flags(port: int) -> frozenset[str]:
        return next(n for n in cluster_nodes(observer) if n.port == port).flags

    poll(lambda: "fail" in flags(victim), timeout=60)
    detected = time.monotonic()
    poll(lambda: "master" in flags(replica), timeout=60)
    promoted = time.monotonic()
    # the promoted replica has no replica of its own, so WAIT 1 on its slots times out
    # (the producer replays) until the dead node is back as its replica: its supervisor
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    restarted = time.monotonic()
    resumed = wait_resumed(pipe, checkpoint, killed)
    poll(redis_healthy, timeout=120, interval=0.2)
    timings.append(
        {
            "killed_master": victim,
            "promoted_replica": replica,
            "kill_to_fail_s": round(detected - killed, 2),
            "fail_to_promoted_s": round(promoted - detected, 2),
            "kill_to_promoted_s": round(promoted - killed, 2),
            "kill_to_restarted_as_replica_s": round(restarted - killed, 2),
            "kill_to_pipeline_resumed_s": resumed,
        }
    )


def test_two_redis_masters_killed_under_load_lose_nothing(
    pipe: Pipeline, metrics_port: int
) -> None:
    first, second = sorted(masters())[:2]
    load = start_load(pipe.stack, rate=50, seconds=40)
    timings: list[dict[str, Any]] = []
    try:
        time.sleep(4)
        fail_over_one_master(pipe, first, timings)
        time.sleep(2)
        fail_over_one_master(pipe, second, timings)
    finally:
        _, err = load.communicate(timeout=120)
    assert load.returncode == 0, err
    pipe.wait_synced(timeout=240)
    report = pipe.verify(settle=20)
    assert report["ok"], (report, pipe.logs())
    assert report["view_count"] == report["index_count"] >= 300
    status = pipe.status()
    assert status["dlq_length"] == 0
    MEASURED["redis_masters_killed"] = timings
    # round trips the producer replayed from its checkpoint: refused by WAIT while a
    # promoted master had no replica, or failed mid-failover (reconnects)
    MEASURED["redis_replayed_write_round_trips"] = producer_counter(
        metrics_port, "searchsync_producer_replica_wait_timeouts"
    )
    MEASURED["producer_reconnects"] = producer_counter(
        metrics_port, "searchsync_producer_reconnects"
    )
    MEASURED["redis_verify"] = {k: report[k] for k in ("ok", "view_count", "index_count")}
    assert {t["killed_master"] for t in timings} == {first, second}


def test_an_opensearch_data_node_killed_under_load_loses_nothing(
    pipe: Pipeline, metrics_port: int
) -> None:
    index = MEASURED["index"]["name"]
    victim = primary_node(index)
    number = int(victim.rsplit("-", 1)[1])
    survivor = int(pipe.os_env["OS_PORT"])
    assert survivor != OS_PORTS[number - 1]
    load = start_load(pipe.stack, rate=50, seconds=25, seed=5)
    try:
        time.sleep(4)
        before = status_or_none(pipe)
        assert before is not None
        killed = time.monotonic()
        os.kill(pid_of(CLUSTER_DIR / f"opensearch-{number}" / "opensearch.pid"), signal.SIGKILL)

        def promoted() -> bool:
            shards = opensearch(survivor, f"/_cat/shards/{index}?format=json")
            return any(
                s["prirep"] == "p" and s["state"] == "STARTED" and s["node"] != victim
                for s in shards
            )

        poll(
            lambda: opensearch(survivor, "/_cluster/health?timeout=1s")["number_of_nodes"] == 2,
            timeout=180,
            interval=0.2,
        )
        detected = time.monotonic()
        poll(promoted, timeout=180, interval=0.2)
        promoted_at = time.monotonic()
        resumed = wait_resumed(pipe, frontier(before)[0], killed)
    finally:
        _, err = load.communicate(timeout=120)
    assert load.returncode == 0, err
    pipe.wait_synced(timeout=240)
    report = pipe.verify(settle=20)
    assert report["ok"], (report, pipe.logs())
    assert report["view_count"] == report["index_count"] >= 300
    assert pipe.status()["dlq_length"] == 0
    MEASURED["opensearch_node_killed"] = {
        "killed_node": victim,
        "held_the_primary": True,
        "kill_to_node_left_s": round(detected - killed, 2),
        "kill_to_replica_promoted_s": round(promoted_at - killed, 2),
        "kill_to_pipeline_resumed_s": resumed,
        "verify": {k: report[k] for k in ("ok", "view_count", "index_count")},
    }
    up = devstack("up", timeout=900)  # the killed node back: the cluster green again
    assert up.returncode == 0, up.stdout + up.stderr
