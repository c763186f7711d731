"""tests/cluster/ runs only through scripts/test-cluster (SEARCHSYNC_CLUSTER_TESTS=1).

These tests start the cluster devstack (devstack/up --cluster: six redis-servers and
three OpenSearch JVMs, ~2 GB and a minute of both cores) and kill its nodes, so
./scripts/test, which collects every test under tests/, must not collect them: without
the variable nothing in this directory is collected.
"""

from __future__ import annotations

import os

import pytest

ENABLED = os.environ.get("SEARCHSYNC_CLUSTER_TESTS") == "1"

# pytest reads this conftest's list before collecting the directory's files
collect_ignore_glob = [] if ENABLED else ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the cluster devstack (scripts/test-cluster runs these)"
    )
