"""The whole pipeline on a Redis Cluster: real producer, consumers and CLI processes,
REDIS_CLUSTER=auto, under load, with a producer and a consumer killed (-9) mid-load;
the index ends equal to the view.

A private cluster of three masters (tests.support.cluster_redis) in place of the
pipeline's private redis-server; PostgreSQL, the Materialize emulator and OpenSearch
are the single-node devstack's (devstack.harness.pipeline). Gated with the rest of
tests/cluster (scripts/test-cluster).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.cluster_redis import three_node_cluster
from tests.support.pipeline import pipeline_of
from tests.support.producer import start_load

pytestmark = pytest.mark.timeout(300)


def test_the_pipeline_on_a_redis_cluster_survives_kills_and_agrees() -> None:
    with three_node_cluster() as nodes, pipeline_of(orders=300, realistic=True) as pipe:
        pipe.stack.redis.close()  # the pipeline's own redis-server: the cluster instead
        pipe.stack.redis = nodes[0]  # REDIS_URL names one node; the client finds the rest
        producer = pipe.stack.producer(**pipe.env())
        first = pipe.consumer("c1")
        pipe.consumer("c2")
        pipe.wait_synced(timeout=120)
        report = pipe.verify(settle=5)
        assert report["ok"], (report, pipe.logs())
        assert report["view_count"] == report["index_count"] >= 300
        assert "single Redis" not in pipe.logs()  # auto found the cluster

        load = start_load(pipe.stack, rate=60, seconds=10)
        try:
            time.sleep(3)
            producer.kill()  # kill -9 mid-load: it resumes from its checkpoint
            first.signal(signal.SIGKILL)  # its partitions move to c2
            time.sleep(1)
            pipe.stack.producer(**pipe.env())
            pipe.consumer("c3")
        finally:
            _, err = load.communicate(timeout=60)
        assert load.returncode == 0, err

        pipe.wait_synced(timeout=150)
        report = pipe.verify(settle=20)
        assert report["ok"], (report, pipe.logs())
        assert report["view_count"] == report["index_count"]
        status = pipe.wait_nothing_pending()  # nothing left stuck in a consumer's hands
        assert status["dlq_length"] == 0
        assert {p["owner"] for p in status["partitions"]} <= {"c2", "c3"}
        # the keys are spread: at least two of the three nodes hold some
        assert sum(node.ask(b"DBSIZE") != b":0\r\n" for node in nodes) >= 2
