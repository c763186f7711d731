"""Every bench's ``--quick`` run as a smoke test: it finishes, its last line is one JSON
object of the shape README "Development" lists, and its figures are positive.

Real Redis and OpenSearch of the devstack. No speed threshold: a figure is checked
for being measured (positive, consistent), never for being fast.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]


@functools.cache  # each bench runs once; the report test reads them all
def run_quick(module: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_raw_bulk_ceiling_reports_every_connection_count() -> None:
    result = run_quick("bench.ceiling")
    assert result["scenario"] == "raw_bulk_ceiling"
    runs = result["by_connections"]
    assert [run["connections"] for run in runs] == [1, 2]
    assert all(run["events"] == 20_000 and run["events_per_s"] > 0 for run in runs)
    assert all(run["failed_requests"] == 0 for run in runs)
    assert result["events_per_s"] == max(run["events_per_s"] for run in runs)


def test_the_consumers_bench_is_compared_with_the_ceiling_of_the_same_run() -> None:
    result = run_quick("bench.consumers")
    assert result["scenario"] == "consumers_drain_backlog"
    assert result["events"] == 20_000 and result["events_per_s"] > 0
    baseline = result["baseline"]
    assert baseline["method"].startswith("pre-encoded _bulk bodies")
    assert [run["connections"] for run in baseline["sweep"]] == [1, 2]
    assert baseline["events_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["events_per_s"] / baseline["events_per_s"], 0.01)
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["max_rss_mb"] > 0
    for run in result["runs"]:
        assert run["indexed"] == 20_000 and set(run["exit_codes"]) == {0}
    assert result["live"]["events"] > 0
    # the backlog laid out as the producer writes it: 1,000 changes a timestamp,
    # grouped per partition into entries of up to 256 (20 timestamps × 8 partitions)
    assert result["changes_per_ts"] == 1000 and 160 <= result["entries"] < 20_000


def test_the_e2e_bench_measures_every_rate_and_every_process() -> None:
    result = run_quick("bench.e2e")
    summary = {k: v for k, v in result.items() if k not in ("rates", "synthetic")}
    assert result["scenario"] == "e2e_sustained_load" and result["verify_ok"] is True, summary
    assert result["emulator_tick_ms"] > 0 and result["refresh_interval"]
    assert [rate["offered"] for rate in result["rates"]] == ["100", "1000"]
    for rate in result["rates"]:
        assert rate["never_searchable_within_30s"] == 0, {k: v for k, v in rate.items()
                                                          if k != "series"}  # fmt: skip
        assert rate["changes"] > 0 and rate["achieved_per_s"] > 0
        searchable, by_id = rate["searchable"], rate["retrievable_by_id"]
        assert searchable["tracked"] > 0
        assert 0 < searchable["p50_ms"] <= searchable["p95_ms"] <= searchable["p99_ms"]
        # a search sees a document only after a refresh, GET by id at once
        assert by_id["p50_ms"] <= searchable["p50_ms"]
        # the split at the change's timestamp: both parts of the changes it could split
        split = rate["searchable_split"]
        assert 0 < split["commit_to_ts"]["tracked"] == split["ts_to_searchable"]["tracked"]
        assert split["commit_to_ts"]["tracked"] <= searchable["tracked"]
        assert 0 < split["ts_to_searchable"]["p50_ms"] <= searchable["p50_ms"]
        names = set(rate["processes"])
        assert {"producer", "emulator", "redis", "postgresql", "opensearch"} <= names
        assert {"consumer c1", "consumer c2", "load generator"} <= names
        assert all(stats["max_rss_mb"] > 0 for stats in rate["processes"].values())
        assert rate["series"] and all(sample["buffer"] >= 0 for sample in rate["series"])
        # every change written in the window was seen acknowledged, its parts add up
        assert rate["never_acknowledged_within_30s"] == 0
        to_ack, to_redis = rate["ts_to_acknowledged"], rate["ts_to_redis"]
        assert to_ack["changes"] > 0 and to_ack["changes"] == to_redis["changes"]
        assert 0 < to_ack["p50_ms"] <= to_ack["p95_ms"] <= to_ack["p99_ms"]
        # the tap saw the first row of every timestamp that was acknowledged, and a row
        # reaches the producer after Materialize closed its timestamp
        added = rate["pipeline_added"]
        assert rate["without_arrival"] == 0 and added["changes"] == to_ack["changes"]
        assert 0 < added["p50_ms"] <= added["p95_ms"] <= added["p99_ms"]
        assert added["p50_ms"] <= to_ack["p50_ms"] and added["p99_ms"] <= to_ack["p99_ms"]
    assert result["baseline"]["events_per_s"] > 0
    (synthetic,) = result["synthetic"]
    assert synthetic["offered_per_s"] == 2000 and synthetic["written_per_s"] > 0
    assert synthetic["achieved_per_s"] > 0 and synthetic["never_acknowledged_within_30s"] == 0
    assert synthetic["ts_to_acknowledged"]["changes"] > 0


def test_the_drain_bench_times_a_backlog_until_search_sees_all_of_it() -> None:
    result = run_quick("bench.drain")
    assert result["scenario"] == "backlog_drain_to_searchable"
    assert result["events"] >= 5_000 and result["seconds"] > 0 and result["events_per_s"] > 0
    assert [run["connections"] for run in result["baseline"]["by_connections"]] == [1, 2]
    assert result["ratio"] == pytest.approx(
        result["events_per_s"] / result["baseline"]["events_per_s"], 0.01
    )
    assert {"producer", "consumer c1", "consumer c2", "emulator"} <= set(result["processes"])


def test_the_headroom_bench_measures_each_condition_round_by_round() -> None:
    result = run_quick("bench.headroom")
    assert result["scenario"] == "producer_headroom" and result["events"] > 0
    conditions = result["conditions"]
    assert set(conditions) == {"shared", "pinned"}
    for condition in conditions.values():
        assert len(condition["runs"]) == 2 and all(run["c_path"] for run in condition["runs"])
        for name in ("events_per_s", "producer_cpu_us_per_row", "baseline_xadd_per_s", "ratio"):
            figure = condition[name]
            assert 0 < figure["min"] <= figure["median"] <= figure["max"] and figure["cv"] >= 0
    steadiest = conditions[result["steadiest_condition"]]
    assert result["producer_cpu_us_per_row"] == steadiest["producer_cpu_us_per_row"]["median"]


def test_the_report_turns_the_results_into_a_page_with_plots(tmp_path: Path) -> None:
    from bench.saved import machine

    for module in (
        "bench.ceiling",
        "bench.consumers",
        "bench.e2e",
        "bench.drain",
        "bench.headroom",
    ):
        result = run_quick(module)
        saved = {**result, "command": f"python -m {module} --quick", "machine": machine()}
        (tmp_path / f"{result['scenario']}.json").write_text(json.dumps(saved))
    # the same e2e result as if run with the low-latency profile: its own section and plots
    tuned = {
        **run_quick("bench.e2e"), "emulator_tick_ms": 100, "refresh_interval": "200ms",
        "scenario": "e2e_sustained_load_tick100ms_refresh200ms", "machine": machine(),
    }  # fmt: skip
    (tmp_path / f"{tuned['scenario']}.json").write_text(json.dumps(tuned))
    # the consumers' result as if run with OpenSearch pinned: its own section and plot
    pinned = {
        **run_quick("bench.consumers"), "scenario": "consumers_drain_backlog_opensearch_own_cpu",
        "placement": {"opensearch": [0], "consumers_redis_and_client": [1]}, "machine": machine(),
    }  # fmt: skip
    (tmp_path / f"{pinned['scenario']}.json").write_text(json.dumps(pinned))
    # bench.emulator_memory's sections, untraced and traced, from results of its shape
    for scenario, frames in (("emulator_memory", 0), ("emulator_memory_traced", 3)):
        memory = emulator_memory_result(frames)
        saved = {**memory, "scenario": scenario, "command": "…", "machine": machine()}
        (tmp_path / f"{scenario}.json").write_text(json.dumps(saved))
    # bench.scale's section from a result of its shape (its --quick run is gated: a JVM)
    scale = {**scale_result(), "command": "…", "machine": machine()}
    (tmp_path / "scale_topologies.json").write_text(json.dumps(scale))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--results", str(tmp_path)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "README.md").read_text()
    assert "Not saved yet" not in page
    for title in ("bench.e2e", "bench.drain", "bench.consumers", "bench.ceiling", "bench.headroom"):
        assert f"({title})" in page
    assert "Where the emulator's memory goes (bench.emulator_memory)" in page
    assert "| view rows: column values (bytes) | 200 | 0.2 | 845 |" in page
    assert "| **RSS when the report was written** | | **60.0** | |" in page
    assert "| 0.2 | 3,479 | `mzemu/engine.py:365: values = …` |" in page
    assert "emulator tick 100 ms and refresh 200ms" in page
    assert "OpenSearch on CPU 0, the rest on CPU 1 (bench.consumers --opensearch-cpus)" in page
    assert "| 3 | 1 | 2 | 9,000 | 10,000 (11,000) | 0.9 | 99.5 | 1.5 / 0.3 / 2.0 |" in page
    assert "Redis memory an entry, 3 master(s): 830 bytes." in page
    tuned_plots = [f"e2e_sustained_load_tick100ms_refresh200ms_{k}" for k in ("latency_cdf", "rss")]
    plots = ("e2e_latency_cdf", "e2e_throughput", "e2e_rss", "consumers_scaling",
             "consumers_scaling_opensearch_own_cpu", *tuned_plots)  # fmt: skip
    for plot in plots:
        png = tmp_path / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({plot}.png)" in page


def test_the_emulator_memory_bench_breaks_down_both_runs() -> None:
    result = run_quick("bench.emulator_memory")
    assert result["scenario"] == "emulator_memory" and result["frames"] == 0
    for name, rows in (("drain", 2_000), ("synthetic", 1_000)):
        report = result[name]["report"]
        assert report["counts"]["rows"] == rows and report["reason"] == "SIGUSR2"
        walked = {s["name"]: s for s in report["structures"]}
        assert walked["view rows: column values (bytes)"]["count"] == rows
        assert 0 < report["structures_mb"] < report["rss_mb"] <= report["rss_peak_mb"]
        assert report["allocator"]["pymalloc"]["allocated_blocks_mb"] > 0
        assert not report["tracemalloc"]["on"]
    # the made-up changes replaced rows: the history holds the rows they replaced
    assert result["synthetic"]["report"]["counts"]["history_updates"] > 0


def emulator_memory_result(frames: int) -> dict[str, Any]:
    """A result of bench.emulator_memory's shape (one drain run)."""
    structures = [
        {"name": "view rows: column values (bytes)", "count": 200, "mb": 0.2, "bytes_each": 845}
    ]
    traced = {
        "on": frames > 0, "frames": frames, "traced_mb": 1.0, "traced_peak_mb": 2.0,
        "own_mb": 0.5, "top_tracebacks": [],
        "top_lines": [
            {"where": "mzemu/engine.py:365: values = …", "mb": 0.2, "count": 3479}
        ],
    }  # fmt: skip
    report = {
        "rss_mb": 60.0, "rss_peak_mb": 70.0, "structures": structures, "structures_mb": 0.2,
        "counts": {"history_updates": 0, "history_times": 0}, "tracemalloc": traced,
        "allocator": {
            "pymalloc": {} if frames else {"allocated_blocks_mb": 30.0,
                                           "available_blocks_mb": 1.0, "free_pools_mb": 2.0},
            "glibc": {"heap_in_use_mb": 3.0, "mmapped_mb": 1.0, "heap_free_mb": 0.5},
        },
    }  # fmt: skip
    drain = {"rows": 200, "seconds": 1.5, "rss_loaded_mb": 55.0, "rss_max_mb": 60.0}
    return {"frames": frames, "drain": {**drain, "report": report}}


def test_the_report_names_what_was_not_saved(tmp_path: Path) -> None:
    from bench.report import render

    page, missing = render(tmp_path)
    assert set(missing) == {
        "e2e_sustained_load", "backlog_drain_to_searchable", "consumers_drain_backlog",
        "raw_bulk_ceiling", "e2e_sustained_load_tick100ms_refresh200ms", "producer_headroom",
        "emulator_memory", "emulator_memory_traced", "scale_topologies",
        "consumers_drain_backlog_opensearch_own_cpu",
    }  # fmt: skip
    assert "python -m bench.e2e --save" in page


@pytest.mark.skipif(
    os.environ.get("SEARCHSYNC_CLUSTER_TESTS") != "1",
    reason="starts a private OpenSearch JVM and 4 redis-servers (~1 min of both cores): "
    "SEARCHSYNC_CLUSTER_TESTS=1 only",
)
def test_the_scale_bench_drains_every_topology_with_its_ceiling_and_cpu(tmp_path: Path) -> None:
    result = run_quick("bench.scale")
    assert result["scenario"] == "scale_topologies" and "2-core box" in result["note"]
    assert [(t["redis_masters"], t["opensearch_nodes"]) for t in result["topologies"]] == [
        (1, 1),
        (3, 1),
    ]
    for topology in result["topologies"]:
        assert [run["connections"] for run in topology["ceiling"]["runs"]] == [1, 2]
        assert topology["redis_bytes_per_entry"] > topology["mean_document_bytes"] > 0
        for run in topology["runs"]:
            assert run["indexed"] == 5_000 and set(run["exit_codes"]) == {0}
    assert [(r["redis_masters"], r["consumers"]) for r in result["rows"]] == [
        (1, 1), (1, 2), (3, 1), (3, 2),
    ]  # fmt: skip
    for row in result["rows"]:
        assert row["events_per_s"] > 0 and row["ceiling_events_per_s"] > 0
        assert row["ratio"] == pytest.approx(
            row["events_per_s"] / row["ceiling_events_per_s"], 0.01
        )
        assert 0 < row["box_cpu_busy_pct"] <= 100
        assert row["cpu_s"]["consumers"] > 0 and row["cpu_s"]["opensearch"] > 0
        assert row["cpu_s"]["redis"] >= 0 and len(row["load_average"]["start"]) == 3
    from bench.report import render

    (tmp_path / "scale_topologies.json").write_text(json.dumps({**result, "command": "…"}))
    page, _ = render(tmp_path)
    assert "(bench.scale)" in page and page.count("\n| 3 | 1 | ") == 2


def test_the_box_is_busy_by_the_share_of_its_jiffies_not_idle() -> None:
    from bench.scale import box_busy, box_ticks

    before = box_ticks("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 …")
    after = box_ticks("cpu  250 0 150 800 100 0 0 0 0 0\ncpu0 …")
    assert before == (200, 1000) and after == (400, 1300)
    assert box_busy(before, after) == pytest.approx(66.7)
    assert box_busy(after, after) == 0.0


def scale_result() -> dict[str, Any]:
    """A result of bench.scale's shape: one OpenSearch node, 1 and 3 Redis masters."""
    row = {
        "redis_masters": 3, "opensearch_nodes": 1, "consumers": 2, "events_per_s": 9000.0,
        "ceiling_events_per_s": 10000.0, "ceiling_best_of_sweep": 11000.0, "ratio": 0.9,
        "box_cpu_busy_pct": 99.5, "cpu_s": {"consumers": 1.5, "redis": 0.3, "opensearch": 2.0},
        "cpu_us_per_doc": {"consumers": 37.5, "redis": 7.5, "opensearch": 50.0},
    }  # fmt: skip
    topology = {"redis_masters": 3, "opensearch_nodes": 1, "redis_bytes_per_entry": 830}
    return {
        "scenario": "scale_topologies", "note": "2-core box: …", "partitions": 8,
        "bulk_size": 1000, "events": 40000, "mean_document_bytes": 697, "heap": "512m",
        "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
        "box_cpu_busy_pct": 99.0, "wall_s": 300.0, "rows": [row], "topologies": [topology],
    }  # fmt: skip
