"""A private OpenSearch node a test owns: in devstack.harness.opensearch_node, shared
with bench/; re-exported here for the tests."""

from __future__ import annotations

from devstack.harness.opensearch_node import ROOT, OpenSearchNode, find_java, node_classpath

__all__ = ["ROOT", "OpenSearchNode", "find_java", "node_classpath"]
