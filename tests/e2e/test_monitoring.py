"""Monitoring as operators run it: a real Prometheus scrapes a running pipeline.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process, a private redis-server (stopped and started again by the test),
the shared OpenSearch node (a private index alias), and Debian's Prometheus
binary (tests.support.prometheus: a free loopback port, a temporary config, the
project's alerting rules). Processes: ``producer.main``, two ``consumer.main``,
the FreshMart load generator — all real subprocesses, each serving /metrics and
/healthz on its own METRICS_PORT.

The runbook's Prometheus queries (§1 "Prometheus Metrics") return data through
Prometheus's HTTP API; every alerting rule evaluates without error against the
real series; /healthz says 200 while all is well, 503 naming Redis while the
pipeline's Redis is stopped, and 200 again once it is back.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import start_load
from tests.support.prometheus import PrivatePrometheus
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.timeout(180)

# The runbook's queries with the aggregations that make them work over several
# consumers: its error rate divides {kind} by {op} series, which never match.
LATENCY_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(opensearch_sync_latency_seconds_bucket[5m])))"
)
THROUGHPUT = "sum by (op) (rate(opensearch_sync_events_total[5m]))"
ERROR_RATE = (
    "sum(rate(opensearch_sync_errors_total[5m])) / sum(rate(opensearch_sync_events_total[5m]))"
)
BUFFER = "opensearch_sync_buffer_size"


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=200, partitions=4, realistic=True) as pipe:
        yield pipe


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()
    except OSError as error:
        return 0, str(error)


def test_prometheus_scrapes_the_pipeline_and_healthz_follows_redis(pipeline: Pipeline) -> None:
    ports = {"producer": free_port(), "c1": free_port(), "c2": free_port()}
    pipeline.stack.producer(**pipeline.env(METRICS_PORT=str(ports["producer"])))
    pipeline.consumer("c1", METRICS_PORT=str(ports["c1"]))
    pipeline.consumer("c2", METRICS_PORT=str(ports["c2"]))
    prometheus = PrivatePrometheus(
        {
            "searchsync-producer": [f"127.0.0.1:{ports['producer']}"],
            "searchsync-consumer": [f"127.0.0.1:{ports['c1']}", f"127.0.0.1:{ports['c2']}"],
        }
    )
    try:
        pipeline.wait_synced()
        load = start_load(pipeline.stack, rate=40, seconds=6)
        _, err = load.communicate(timeout=60)
        assert load.returncode == 0, err
        _runbook_queries_return_data(prometheus)
        _every_rule_evaluates(prometheus)
        _healthz_follows_redis(pipeline, list(ports.values()))
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pipeline.logs()}") from None
    finally:
        prometheus.close()


def _runbook_queries_return_data(prometheus: PrivatePrometheus) -> None:
    def synced_upserts() -> list[dict[str, object]] | None:
        rows = prometheus.query(THROUGHPUT)
        ops = {row["metric"].get("op"): float(row["value"][1]) for row in rows}
        return rows if ops.get("upsert", 0) > 0 else None

    wait_for(synced_upserts, 30, "Prometheus to see upserts synced", interval=0.5)
    # over 5 minutes the startup's snapshot counts too (seconds old when first acknowledged)
    [p95] = prometheus.query(LATENCY_P95)
    assert math.isfinite(float(p95["value"][1])) and float(p95["value"][1]) > 0, p95
    [rate] = prometheus.query(ERROR_RATE)
    assert math.isfinite(float(rate["value"][1])) and float(rate["value"][1]) >= 0, rate
    # the runbook's own forms: per consumer, and its error rate matches nothing (README)
    runbook_p95 = "histogram_quantile(0.95, rate(opensearch_sync_latency_seconds_bucket[5m]))"
    assert len(prometheus.query(runbook_p95)) == 2
    assert len(prometheus.query("rate(opensearch_sync_events_total[5m])")) == 4  # 2 ops × 2
    runbook_errors = (
        "rate(opensearch_sync_errors_total[5m]) / rate(opensearch_sync_events_total[5m])"
    )
    assert prometheus.query(runbook_errors) == []
    buffers = prometheus.query(BUFFER)
    assert sorted(row["metric"]["job"] for row in buffers) == ["searchsync-consumer"] * 2
    # the per-partition series the dashboard and the rules use
    applied = prometheus.query(
        "max by (partition) (opensearch_sync_partition_applied_timestamp_seconds)"
    )
    assert sorted(row["metric"]["partition"] for row in applied) == ["0", "1", "2", "3"]
    lag = prometheus.query("max by (partition) (searchsync_producer_partition_buffer_size)")
    assert len(lag) == 4
    assert prometheus.query("max(searchsync_producer_leader)")[0]["value"][1] == "1"


def _every_rule_evaluates(prometheus: PrivatePrometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        [group] = prometheus.api("rules")["groups"]
        rules: list[dict[str, Any]] = group["rules"]  # never evaluated: year 0001
        return (
            rules
            if all(rule.get("lastEvaluation", "0001").startswith("20") for rule in rules)
            else None
        )

    rules = wait_for(evaluated, 15, "every rule to be evaluated", interval=0.5)
    assert len(rules) == 9
    broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not broken


def _healthz_follows_redis(pipeline: Pipeline, ports: list[int]) -> None:
    assert [healthz(port) for port in ports] == [(200, "ok")] * 3
    pipeline.stack.redis.kill_gracefully()

    def all_name_redis() -> list[tuple[int, str]] | None:
        answers = [healthz(port) for port in ports]
        return (
            answers if all(a[0] == 503 and "Redis failing for" in a[1] for a in answers) else None
        )

    answers = wait_for(all_name_redis, 20, "every /healthz to say 503 naming Redis", interval=0.3)
    assert all(len(reason.splitlines()) == 1 for _, reason in answers), answers
    pipeline.stack.redis.start()
    wait_for(
        lambda: all(healthz(port) == (200, "ok") for port in ports),
        30,
        "every /healthz to be 200 again",
        interval=0.3,
    )
