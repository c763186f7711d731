"""Private Redis Clusters a test owns: in devstack.harness.cluster_redis, shared with
bench/; re-exported here for the tests."""

from __future__ import annotations

from devstack.harness.cluster_redis import OneNodeCluster, one_node_cluster, three_node_cluster

__all__ = ["OneNodeCluster", "one_node_cluster", "three_node_cluster"]
