"""Failover under load on the cluster devstack (issue 11 point 3): the real producer and
consumers over `devstack/up --cluster`'s Redis Cluster (3 masters + 3 replicas,
REDIS_WAIT_REPLICAS=1) and 3-node OpenSearch (the alias's index at 1 replica,
OS_INDEX_REPLICAS=auto; the consumers and the CLI given every node in OS_HOSTS, as the
devstack records them), the FreshMart load generator writing to PostgreSQL:

a. kill -9 a Redis master, its replica is promoted, the dead node is started again
   (devstack/up --cluster: it rejoins as the new master's replica, which WAIT 1 needs),
   then the same for a second master. Just before each kill the master's partition
   streams are read (one round trip); once the pipeline has resumed, the promoted node's:
   entries lost in the failover, those the producer had been acknowledged (the
   contract: none), and those its replay wrote again (tests/cluster/losses.py).
   `searchsync verify` at zero drift;
b. kill -9 the OpenSearch data node holding the index's primary (wherever it is in
   OS_HOSTS: the client starts its round robin at a shuffled node); the replica is
   promoted; `searchsync verify` at zero drift.

"Resumed" (both): the producer's checkpoint and every partition's applied frontier past
both the kill's wall-clock ms and the checkpoint read after the kill (the emulator's ts
are wall-clock ms): every change committed before the kill is in OpenSearch.

Only the cluster devstack's nodes (ports 7001-7006, 9201-9203, their pid files under
.devstack/cluster) are killed. PostgreSQL and the emulator are a private schema and
emulator (devstack.harness); the producer's and consumers' Redis and OpenSearch are the
cluster devstack's. Timings and counts are measured and written to
.devstack/cluster/measurements.json (key "failover_under_load"), never asserted. Gated
with the rest of tests/cluster.
"""

from __future__ import annotations

import dataclasses
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
from redis.crc import key_slot

from devstack.harness.services import free_port
from searchsync.common.keys import Keys
from tests.cluster.losses import StreamEntry, account_failover
from tests.cluster.stack import (
    CLUSTER_DIR,
    OS_PORTS,
    REDIS_PORTS,
    cluster_env,
    cluster_info,
    cluster_nodes,
    connection_failures,
    devstack,
    opensearch,
    pid_of,
    poll,
    status_or_none,
    wait_applied_past,
)
from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import start_load

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

MEASURED: dict[str, Any] = {}
KEYS = Keys("orders_search_source_mv", 6)  # the Stack's view, 6 partitions


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


def serves(slots: tuple[str, ...], slot: int) -> bool:
    """Whether CLUSTER NODES' slot items (``0-5460``, ``7000``; ``[…]`` migrations are
    not served yet) include ``slot``."""
    for item in slots:
        if item.startswith("["):
            continue
        low, _, high = item.partition("-")
        if int(low) <= slot <= int(high or low):
            return True
    return False


def streams_of(port: int) -> list[str]:
    """The view's partition streams whose slots the master on ``port`` serves."""
    (me,) = [n for n in cluster_nodes(port) if n.port == port]
    return [s for s in KEYS.streams() if serves(me.slots, key_slot(s.encode()))]


def read_streams(port: int, streams: list[str]) -> dict[str, list[StreamEntry]]:
    """Every entry of ``streams`` on the node on ``port``, in one round trip; each XRANGE
    is one moment of its stream (a MULTI cannot span their slots: CROSSSLOT). Nothing
    trims them mid-test (STREAM_RETENTION_SECONDS is a day). Raises RedisError."""
    with (
        redis.Redis(port=port, socket_timeout=10) as client,
        client.pipeline(transaction=False) as pipe,
    ):
        for stream in streams:
            pipe.xrange(stream)
        replies = pipe.execute()
    return dict(zip(streams, replies, strict=True))


def read_checkpoint(port: int) -> int:
    """The producer's checkpoint through a new cluster client started at ``port`` (a new
    one: its slot map is read now). Raises RedisError, or ValueError when there is none."""
    try:
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            raw = client.get(KEYS.checkpoint)
        finally:
            client.close()
    except redis.exceptions.RedisClusterException as error:  # not a RedisError
        raise redis.RedisError(str(error)) from error
    if raw is None:
        raise ValueError("no checkpoint")
    return int(raw)


def producer_counter(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(rf"^{name}_total\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(v) for v in found)


def replays(metrics_port: int) -> dict[str, float]:
    """The producer's counters of what it wrote again from its checkpoint: round trips
    refused by WAIT, and reconnects (a round trip failed mid-failover)."""
    return {
        "replica_wait_timeouts": producer_counter(
            metrics_port, "searchsync_producer_replica_wait_timeouts"
        ),
        "reconnects": producer_counter(metrics_port, "searchsync_producer_reconnects"),
    }


def wall_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def pipe() -> Iterator[Pipeline]:
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    poll(redis_healthy, timeout=120, interval=0.2)
    poll(lambda: opensearch(9201, "/_cluster/health")["status"] == "green", timeout=120)
    recorded = cluster_env()
    delete_view_keys(KEYS.pattern)
    # the clients' first address: a live node that is not a master now (never a victim)
    entry = next(p for p in REDIS_PORTS if p not in masters())
    with pipeline_of(orders=300, realistic=True, partitions=6) as built:
        built.stack.redis.close()  # the Stack's private redis-server: the cluster's instead
        built.stack.redis = DevstackRedis(entry)  # type: ignore[assignment]
        # every OpenSearch node, as the devstack records them (OS_HOSTS wins over the
        # OS_HOST/OS_PORT beside it, which name the first)
        built.os_env = {name: recorded[name] for name in ("OS_HOSTS", "OS_HOST", "OS_PORT")}
        built.search.close()
        built.search = OpenSearch(hosts=[{"host": "127.0.0.1", "port": p} for p in OS_PORTS])
        try:
            yield built
        finally:
            for process in built.stack.producers:
                process.close()
            delete_view_keys(KEYS.pattern)
    down = devstack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    path = CLUSTER_DIR / "measurements.json"
    measured = json.loads(path.read_text()) if path.exists() else {}
    measured["failover_under_load"] = MEASURED
    path.write_text(json.dumps(measured, indent=2) + "\n")
    print("\nfailover under load:", json.dumps(MEASURED, indent=2))


@pytest.fixture(scope="module")
def metrics_port(pipe: Pipeline) -> int:
    """The index at 1 replica (auto on 3 data nodes), one producer with
    REDIS_WAIT_REPLICAS=1 and its metrics, two consumers; synced."""
    created = pipe.cli("index", "create", "--json")
    assert created.returncode == 0, created.stderr
    index = json.loads(created.stdout)["index"]
    settings = opensearch(9201, f"/{index}/_settings?flat_settings=true")
    assert settings[index]["settings"]["index.number_of_replicas"] == "1", settings
    poll(lambda: opensearch(9201, f"/_cluster/health/{index}")["status"] == "green", 120)
    MEASURED["index"] = {"name": index, "number_of_replicas": 1, "primary_on": primary_node(index)}
    MEASURED["os_hosts"] = pipe.os_env["OS_HOSTS"]
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


def fail_over_one_master(
    pipe: Pipeline, metrics_port: int, victim: int, timings: list[dict[str, Any]]
) -> None:
    """kill -9 ``victim`` under load; measure FAIL, promotion, the pipeline resumed, and
    what the failover lost and the producer wrote again; bring the dead node back
    (devstack/up --cluster) as its successor's replica."""
    nodes = {n.port: n for n in cluster_nodes(victim)}
    (replica,) = [n.port for n in nodes.values() if n.master_id == nodes[victim].node_id]
    observer = next(p for p in masters() if p != victim)
    streams = streams_of(victim)
    replayed_before = replays(metrics_port)
    # the checkpoint, then the master's streams, then the kill, as close as they go: a
    # change below that checkpoint had its round trip acknowledged (WAIT 1 answered)
    checkpoint = read_checkpoint(observer)
    before = read_streams(victim, streams)
    read_at = time.monotonic()  # entries written from here to the kill are not counted
    killed_ms = wall_ms()
    killed = kill_redis(victim)

    def flags(port: int) -> frozenset[str]:
        return next(n for n in cluster_nodes(observer) if n.port == port).flags

    poll(lambda: "fail" in flags(victim), timeout=60)
    detected = time.monotonic()
    poll(lambda: "master" in flags(replica), timeout=60)
    promoted = time.monotonic()
    # the checkpoint read after the kill (its slot may be the victim's: once promoted)
    after = poll(lambda: read_checkpoint(observer), timeout=60, interval=0.1)
    # the promoted replica has no replica of its own, so WAIT 1 on its slots times out
    # (the producer replays) until the dead node is back as its replica: its supervisor
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    restarted = time.monotonic()
    resumed = wait_applied_past(pipe, max(after, killed_ms), killed)
    # the replay of everything from the checkpoint is written by now: resumed means the
    # checkpoint passed the kill
    loss = account_failover(before, read_streams(replica, streams), checkpoint)
    replayed_after = replays(metrics_port)
    poll(redis_healthy, timeout=120, interval=0.2)
    timings.append(
        {
            "killed_master": victim,
            "promoted_replica": replica,
            "streams": len(streams),
            "kill_to_fail_s": round(detected - killed, 2),
            "fail_to_promoted_s": round(promoted - detected, 2),
            "kill_to_promoted_s": round(promoted - killed, 2),
            "kill_to_restarted_as_replica_s": round(restarted - killed, 2),
            "kill_to_pipeline_resumed_s": resumed,
            "streams_read_to_kill_ms": round((killed - read_at) * 1000, 1),
            "checkpoint_after_kill_minus_kill_ms": after - killed_ms,
            "loss": dataclasses.asdict(loss),
            "producer_replays": {k: replayed_after[k] - replayed_before[k] for k in replayed_after},
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
        fail_over_one_master(pipe, metrics_port, first, timings)
        time.sleep(2)
        fail_over_one_master(pipe, metrics_port, second, timings)
    finally:
        _, err = load.communicate(timeout=120)
    MEASURED["redis_masters_killed"] = timings
    assert load.returncode == 0, err
    pipe.wait_synced(timeout=240)
    report = pipe.verify(settle=20)
    MEASURED["redis_verify"] = {k: report[k] for k in ("ok", "view_count", "index_count")}
    assert report["ok"], (report, pipe.logs())
    assert report["view_count"] == report["index_count"] >= 300
    status = pipe.status()
    assert status["dlq_length"] == 0
    assert {t["killed_master"] for t in timings} == {first, second}
    for failover in timings:
        loss = failover["loss"]
        assert loss["read_entries"] > 0, failover  # the victim served partition streams
        # the contract: a change whose round trip WAIT acknowledged survives the failover
        # (or another copy of it does); one lost before WAIT answered is written again
        assert loss["acknowledged_lost"] == 0, failover
        assert loss["unrecovered"] == 0, failover
        assert loss["unknown_on_promoted"] == 0, failover


def test_an_opensearch_data_node_killed_under_load_loses_nothing(
    pipe: Pipeline, metrics_port: int
) -> None:
    index = MEASURED["index"]["name"]
    victim = primary_node(index)
    number = int(victim.rsplit("-", 1)[1])
    hosts = pipe.os_env["OS_HOSTS"].split(",")
    position = hosts.index(f"127.0.0.1:{OS_PORTS[number - 1]}")
    survivor = next(p for i, p in enumerate(OS_PORTS, 1) if i != number)
    failed_before = connection_failures(pipe)
    load = start_load(pipe.stack, rate=50, seconds=25, seed=5)
    try:
        time.sleep(4)
        killed_ms = wall_ms()
        killed = time.monotonic()
        os.kill(pid_of(CLUSTER_DIR / f"opensearch-{number}" / "opensearch.pid"), signal.SIGKILL)
        # the checkpoint once the kill is done (the producer does not need OpenSearch)
        after = poll(lambda: status_or_none(pipe), timeout=60)["checkpoint"]

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
        resumed = wait_applied_past(pipe, max(after or 0, killed_ms), killed)
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
        # 1-based; the client starts its round robin at a shuffled node
        "position_in_os_hosts": position + 1,
        "kill_to_node_left_s": round(detected - killed, 2),
        "kill_to_replica_promoted_s": round(promoted_at - killed, 2),
        "kill_to_pipeline_resumed_s": resumed,
        "checkpoint_after_kill_minus_kill_ms": (after or 0) - killed_ms,
        # the two consumers' bulks that failed on a connection since the load began, by
        # reason: a refused connection never (NodesTransport sends it to the next node)
        "consumer_bulks_failed_on_a_connection": {
            reason: count - failed_before.get(reason, 0)
            for reason, count in connection_failures(pipe).items()
            if count > failed_before.get(reason, 0)
        },
        "verify": {k: report[k] for k in ("ok", "view_count", "index_count")},
    }
    up = devstack("up", timeout=900)  # the killed node back: the cluster green again
    assert up.returncode == 0, up.stdout + up.stderr
