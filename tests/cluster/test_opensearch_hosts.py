"""OS_HOSTS on the cluster devstack (issue 11): the consumers and the CLI are given every
OpenSearch node as `devstack/up --cluster` records them in .devstack/cluster/env
(OS_HOSTS=127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203, beside OS_HOST/OS_PORT naming
the first), and the node FIRST in OS_HOSTS is killed with SIGKILL under load. The
pipeline must resume through the other two nodes and `searchsync verify` end at zero
drift. The index's primary is moved to that node first (unless it holds the replica), so
the kill also fails the primary over. With one address (OS_HOST/OS_PORT only, the client
before OS_HOSTS) the consumers would wait for the dead node forever.

PostgreSQL, the emulator and Redis are the Stack's private ones (devstack.harness); only
OpenSearch is the cluster devstack's. The killed node is started again by
`devstack/up --cluster` at the end. Timings are measured and written to
.devstack/cluster/measurements.json (key "opensearch_hosts"), never asserted. Gated with
the rest of tests/cluster (scripts/test-cluster, SEARCHSYNC_CLUSTER_TESTS=1).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import OpenSearch

from tests.cluster.stack import (
    CLUSTER_DIR,
    OS_PORTS,
    applied_past,
    cluster_env,
    connection_failures,
    devstack,
    opensearch,
    pid_of,
    poll,
    status_or_none,
)
from tests.support.pipeline import pipeline_of
from tests.support.producer import start_load

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

MEASURED: dict[str, Any] = {}
FIRST_NODE = "searchsync-cluster-1"  # devstack/lib/cluster.sh's name of 127.0.0.1:9201


@pytest.fixture(scope="module")
def os_hosts() -> Iterator[dict[str, str]]:
    """The cluster devstack up and green; its OpenSearch variables as recorded."""
    up = devstack("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    poll(lambda: opensearch(OS_PORTS[0], "/_cluster/health")["status"] == "green", timeout=180)
    recorded = cluster_env()
    yield {name: recorded[name] for name in ("OS_HOSTS", "OS_HOST", "OS_PORT")}
    down = devstack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    path = CLUSTER_DIR / "measurements.json"
    measured = json.loads(path.read_text()) if path.exists() else {}
    measured["opensearch_hosts"] = MEASURED
    path.write_text(json.dumps(measured, indent=2) + "\n")
    print("\nOS_HOSTS, first node killed:", json.dumps(MEASURED, indent=2))


def ports_of(os_hosts: str) -> list[int]:
    return [int(item.rsplit(":", 1)[1]) for item in os_hosts.split(",")]


def primary_on_first_node(index: str, port: int) -> str:
    """Node 1 made to hold the index's primary (moved there when it holds no copy), so
    the kill also fails the primary over; what it holds: "primary" or "replica"."""
    shards = opensearch(port, f"/_cat/shards/{index}?format=json")
    on_first = [s["prirep"] for s in shards if s["node"] == FIRST_NODE]
    if on_first:
        return "primary" if on_first == ["p"] else "replica"
    (primary,) = [s["node"] for s in shards if s["prirep"] == "p"]
    move = {"index": index, "shard": 0, "from_node": primary, "to_node": FIRST_NODE}
    opensearch(port, "/_cluster/reroute", "POST", {"commands": [{"move": move}]})

    def moved() -> bool:
        shards = opensearch(port, f"/_cat/shards/{index}?format=json")
        return (
            any(
                s["node"] == FIRST_NODE and s["prirep"] == "p" and s["state"] == "STARTED"
                for s in shards
            )
            and opensearch(port, f"/_cluster/health/{index}")["status"] == "green"
        )

    poll(moved, timeout=120, interval=0.2)
    return "primary"


def test_the_node_first_in_os_hosts_killed_under_load_loses_nothing(
    os_hosts: dict[str, str],
) -> None:
    ports = ports_of(os_hosts["OS_HOSTS"])
    assert ports == list(OS_PORTS), os_hosts  # the devstack's order: node 1 first
    first = ports[0]
    survivor = ports[1]
    with pipeline_of(orders=300, realistic=True, partitions=4) as pipe:
        pipe.os_env = dict(os_hosts)
        pipe.search.close()
        pipe.search = OpenSearch(hosts=[{"host": "127.0.0.1", "port": port} for port in ports])
        created = pipe.cli("index", "create", "--json")
        assert created.returncode == 0, created.stderr
        index = json.loads(created.stdout)["index"]
        poll(lambda: opensearch(survivor, f"/_cluster/health/{index}")["status"] == "green", 120)
        held = primary_on_first_node(index, survivor)
        pipe.stack.producer(**pipe.env())
        pipe.consumer("c1")
        pipe.consumer("c2")
        pipe.wait_synced(timeout=180)
        load = start_load(pipe.stack, rate=50, seconds=25, seed=11)
        try:
            time.sleep(4)
            killed = time.monotonic()
            os.kill(pid_of(CLUSTER_DIR / "opensearch-1" / "opensearch.pid"), signal.SIGKILL)
            # the checkpoint once the kill is done: the load (50 changes/s) has written
            # changes below it that only a live node can index
            after = poll(lambda: status_or_none(pipe), timeout=60)
            assert after["checkpoint"] is not None
            poll(lambda: applied_past(pipe, after["checkpoint"]), timeout=150, interval=0.2)
            resumed = round(time.monotonic() - killed, 2)
        finally:
            _, err = load.communicate(timeout=120)
            for consumer in pipe.consumers.values():  # kept for reading after the run
                (CLUSTER_DIR / f"opensearch-hosts-{consumer.name}.log").write_text(consumer.log())
        assert load.returncode == 0, err
        pipe.wait_synced(timeout=240)
        report = pipe.verify(settle=20)
        assert report["ok"], (report, pipe.logs())
        assert report["view_count"] == report["index_count"] >= 300
        assert pipe.status()["dlq_length"] == 0
        MEASURED.update(
            {
                "os_hosts": os_hosts["OS_HOSTS"],
                "killed_port": first,
                "killed_node_held": held,
                "kill_to_pipeline_resumed_s": resumed,
                # the two consumers' bulks that failed on a connection, by reason
                "consumer_bulks_failed_on_a_connection": connection_failures(pipe),
                "verify": {k: report[k] for k in ("ok", "view_count", "index_count")},
            }
        )
        up = devstack("up", timeout=900)  # the killed node back, the cluster green again
        assert up.returncode == 0, up.stdout + up.stderr
