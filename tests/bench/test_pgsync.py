"""``python -m bench.pgsync --quick``: PGSync beside searchsync, a smoke run.

Real PostgreSQL, OpenSearch and a private redis-server; PGSync from PyPI in its own
virtualenv (.venv-pgsync: the first run makes it, a minute or two with pip; later runs
reuse it). Checks the JSON's shape, that every figure was measured (positive), and
that PGSync's replication slot and triggers are gone afterwards. No speed threshold.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.pgsync import reached

ROOT = Path(__file__).resolve().parents[2]


def test_a_change_is_reached_by_its_own_timestamp_or_a_later_one() -> None:
    written = dt.datetime(2026, 12, 4, 17, 0, 0, 123456, tzinfo=dt.UTC)
    assert reached("2026-12-04T17:00:00.123456+00:00", written)
    assert reached("2026-12-04T18:00:00.123456+01:00", written)  # the same instant
    assert reached("2026-12-04T17:00:01+00:00", written)  # a later change of the order
    assert not reached("2026-12-04T17:00:00.123455+00:00", written)
    assert not reached(None, written)


@pytest.mark.timeout(900)
def test_pgsync_quick_measures_both_sides_and_cleans_up() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.pgsync", "--quick"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["scenario"] == "pgsync_peer"
    peer, ours = result["pgsync"], result["searchsync"]
    assert peer["version"] and peer["rows"] > 0 and result["events"] == peer["rows"]
    assert result["seconds"] > 0 and result["events_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["max_rss_mb"] > 0
    assert result["baseline"]["events_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["events_per_s"] / result["baseline"]["events_per_s"], 0.01
    )
    initial, changes = peer["initial_sync"], peer["changes"]
    assert 0 < initial["bootstrap_seconds"] < initial["seconds"]
    assert changes["changes"] > 0 and changes["achieved_per_s"] > 0
    assert changes["searchable"]["tracked"] > 0
    # GET by id is real time, a search waits for a refresh
    assert 0 < changes["retrievable_by_id"]["p50_ms"] <= changes["searchable"]["p50_ms"]
    assert changes["never_searchable_within_30s"] == 0
    for window in (initial, changes):
        assert window["processes"]["pgsync"]["cpu_s"] > 0
        assert window["processes"]["pgsync"]["max_rss_mb"] > 0
    assert peer["cleanup"]["left_after_teardown"] == {"replication_slots": 0, "triggers": 0}
    assert "teardown_error" not in peer["cleanup"]
    assert ours["initial_sync"]["events_per_s"] > 0
    assert ours["changes"]["achieved_per_s"] > 0
    assert 0 < ours["changes"]["searchable"]["p50_ms"] <= ours["changes"]["searchable"]["p95_ms"]
