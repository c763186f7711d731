"""Two views from one deployment (issue 11 point 4), with real processes.

A views file lists the FreshMart orders view and the stores view
(devstack/sql/025_stores_search_source_mv.sql, mapping devstack/views/), each into its
own index alias. One producer per view (SEARCHSYNC_VIEW), one consumer fleet serving
both; the FreshMart load generator runs, a consumer is killed with SIGKILL mid-load,
and ``searchsync verify --view`` must find both indexes equal to their views; then
``searchsync resync --view`` rebuilds the stores index alone, with its own mapping.

Services: real PostgreSQL (a private FreshMart schema), a private emulator, a private
redis-server, the shared single-node OpenSearch (private aliases): not the cluster
devstack. It took 1 m 48 s on this loaded 2-core box, so it lives here, run by
scripts/test-cluster (SEARCHSYNC_CLUSTER_TESTS=1, tests/cluster/conftest.py), not by
./scripts/test; the unit tests of common.views and consumer.fleet run there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.harness.consumer import ConsumerProcess
from devstack.harness.producer import ProducerProcess
from tests.support.pipeline import CLI, Pipeline, is_synced, pipeline_of
from tests.support.producer import start_load, wait_for

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
ORDERS = "orders_search_source_mv"
STORES = "stores_search_source_mv"


class Views:
    """A views file over a Pipeline's private services, and its processes."""

    def __init__(self, pipe: Pipeline, tmp: Path) -> None:
        self.pipe = pipe
        self.aliases = {ORDERS: f"{pipe.alias}_orders", STORES: f"{pipe.alias}_stores"}
        self.file = tmp / "views.toml"
        mapping = REPO / "devstack" / "views" / "stores.mapping.json"
        self.file.write_text(
            f'[[views]]\nname = "{ORDERS}"\nkey_column = "order_id"\n'
            f'index_alias = "{self.aliases[ORDERS]}"\npartitions = 4\n\n'
            f'[[views]]\nname = "{STORES}"\nkey_column = "store_id"\n'
            f'index_alias = "{self.aliases[STORES]}"\npartitions = 2\nmapping = "{mapping}"\n'
        )
        env = pipe.env(SEARCHSYNC_CONFIG=str(self.file))
        for variable in ("VIEW_NAME", "OS_INDEX_NAME", "KEY_COLUMN"):
            env.pop(variable, None)
        self.env = env
        self.consumers: list[ConsumerProcess] = []

    def producer(self, view: str) -> ProducerProcess:
        process = ProducerProcess({**self.env, "SEARCHSYNC_VIEW": view}, self.pipe.stack.log_dir)
        self.pipe.stack.producers.append(process.start())
        return process

    def consumer(self, name: str, **extra: str) -> ConsumerProcess:
        process = ConsumerProcess({**self.env, **extra}, name, self.pipe.stack.log_dir)
        self.consumers.append(process)
        self.pipe.consumers[name] = process
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def status(self, view: str | None = None) -> dict[str, Any]:
        result = self.cli("status", "--json", *(["--view", view] if view else []))
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def wait_synced(self, view: str, timeout: float = 120) -> None:
        wait_for(lambda: is_synced(self.status(view)), timeout, f"view {view} to be applied",
                 interval=0.5)  # fmt: skip

    def verify(self, view: str, settle: float = 20) -> dict[str, Any]:
        result = self.cli("verify", "--json", "--view", view, "--settle", str(settle))
        assert result.returncode in (0, 1), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def close(self) -> None:
        for alias in self.aliases.values():
            self.pipe.search.indices.delete(index=f"{alias}_v*", ignore=[404])


@pytest.fixture
def views(tmp_path: Path) -> Iterator[Views]:
    with pipeline_of(orders=200, partitions=4, realistic=True) as pipe:
        made = Views(pipe, tmp_path)
        try:
            yield made
        finally:
            made.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_two_views_one_fleet_a_consumer_killed_mid_load(views: Views) -> None:
    port = free_port()
    views.producer(ORDERS)
    views.producer(STORES)
    first = views.consumer("c1")
    views.consumer("c2", METRICS_PORT=str(port))
    for view in (ORDERS, STORES):
        views.wait_synced(view)

    load = start_load(views.pipe.stack, rate=50, seconds=10)
    try:
        time.sleep(3)
        first.signal(signal.SIGKILL)  # kill -9: its partitions of both views move to c2, c3
        views.consumer("c3")
    finally:
        _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err

    reports = {}
    for view in (ORDERS, STORES):
        views.wait_synced(view)
        reports[view] = views.verify(view)
        assert reports[view]["ok"], (view, reports[view], views.pipe.logs())
        assert reports[view]["view_count"] == reports[view]["index_count"] > 0
    assert reports[ORDERS]["view_count"] >= 200

    # status without --view shows both views; each view's partitions are served by the
    # live consumers only (leases per view)
    every = views.status()
    assert [report["view"] for report in every["views"]] == [ORDERS, STORES]
    for report in every["views"]:
        assert sorted(report["members"]) == ["c2", "c3"], report
        assert {p["owner"] for p in report["partitions"]} <= {"c2", "c3"}
        assert report["dlq_length"] == 0
    assert len(every["views"][0]["partitions"]) == 4
    assert len(every["views"][1]["partitions"]) == 2

    # one /metrics for the fleet member, its samples labelled by view; /healthz ok
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    for view in (ORDERS, STORES):
        assert f'opensearch_sync_events_total{{op="upsert",view="{view}"}}' in metrics
    assert metrics.count("# TYPE opensearch_sync_events_total counter") == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.status == 200

    # the stores index has the view's own mapping, not the orders one
    mapping = views.pipe.search.indices.get_mapping(index=views.aliases[STORES])
    (properties,) = [m["mappings"]["properties"] for m in mapping.values()]
    assert properties["order_count"] == {"type": "long"}
    assert "order_id" not in properties

    # resync --view rebuilds that view's index alone, with its own mapping
    before = sorted(views.pipe.search.indices.get_alias(name=views.aliases[ORDERS]))
    rebuilt = views.cli("resync", "--yes", "--json", "--view", STORES)
    assert rebuilt.returncode == 0, (rebuilt.stdout, rebuilt.stderr)
    (index,) = views.pipe.search.indices.get_alias(name=views.aliases[STORES])
    assert index == f"{views.aliases[STORES]}_v2"
    mapping = views.pipe.search.indices.get_mapping(index=index)
    assert mapping[index]["mappings"]["properties"]["order_count"] == {"type": "long"}
    assert sorted(views.pipe.search.indices.get_alias(name=views.aliases[ORDERS])) == before
    report = views.verify(STORES)
    assert report["ok"], (report, views.pipe.logs())
