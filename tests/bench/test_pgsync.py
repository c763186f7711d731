"""``python -m bench.pgsync --quick``: PGSync beside searchsync, a smoke run.

Real PostgreSQL, OpenSearch and a private redis-server; PGSync from PyPI in its own
virtualenv (.venv-pgsync: the first run makes it, a minute or two with pip; later runs
reuse it). Checks the JSON's shape, that every figure was measured (positive), and
that PGSync's replication slot and triggers are gone afterwards. No speed threshold.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench.pgsync import drop_stale_slots, limit_of, reached
from tests.support.mzemu import pg_dsn

ROOT = Path(__file__).resolve().parents[2]


def test_a_change_is_reached_by_its_own_timestamp_or_a_later_one() -> None:
    written = dt.datetime(2026, 12, 4, 17, 0, 0, 123456, tzinfo=dt.UTC)
    assert reached("2026-12-04T17:00:00.123456+00:00", written)
    assert reached("2026-12-04T18:00:00.123456+01:00", written)  # the same instant
    assert reached("2026-12-04T17:00:01+00:00", written)  # a later change of the order
    assert not reached("2026-12-04T17:00:00.123455+00:00", written)
    assert not reached(None, written)


def test_the_limit_is_named_only_below_ninety_percent_of_the_offered_rate() -> None:
    assert limit_of(950.0, 400.0, 1000.0) is None
    assert limit_of(400.0, 500.0, 1000.0).startswith("writer")  # type: ignore[union-attr]
    assert limit_of(400.0, 990.0, 1000.0).startswith("with PGSync")  # type: ignore[union-attr]


def test_only_slots_of_killed_runs_are_dropped() -> None:
    """A run killed before its teardown leaves its slot; its schema is gone, so it goes."""
    conninfo = psycopg.conninfo.conninfo_to_dict(pg_dsn())
    database = str(conninfo["dbname"])
    live, dead = f"test_prod_{secrets.token_hex(6)}", f"test_prod_{secrets.token_hex(6)}"
    slots = [f"{database.lower()}_pgsync_{name}" for name in (live, dead)]
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(live)))
        for slot in slots:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
        try:
            assert slots[1] in drop_stale_slots(database)
            left = {
                row[0]
                for row in conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s)",
                    (slots,),
                )
            }
            assert left == {slots[0]}
        finally:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = ANY(%s)",
                (slots,),
            )
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(live)))


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
    assert changes["writer_alone_per_s"] > 0
    for window in (initial, changes):
        assert window["processes"]["pgsync"]["cpu_s"] > 0
        assert window["processes"]["pgsync"]["max_rss_mb"] > 0
    assert peer["cleanup"]["left_after_teardown"] == {"replication_slots": 0, "triggers": 0}
    assert "teardown_error" not in peer["cleanup"]
    assert ours["initial_sync"]["events_per_s"] > 0
    assert ours["changes"]["achieved_per_s"] > 0
    assert ours["changes"]["retrievable_by_id"]["p50_ms"] > 0
    assert 0 < ours["changes"]["searchable"]["p50_ms"] <= ours["changes"]["searchable"]["p95_ms"]
