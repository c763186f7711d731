"""The emulator's memory: the opt-in report (MZEMU_TRACEMALLOC) and the view's load.

Services: the devstack PostgreSQL; each test runs a private emulator process
(``tests.support.mzemu``) over its own FreshMart schema.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg

from tests.integration.test_mzemu_subscribe import VIEW, copy_until, data, set_status
from tests.support.mzemu import Emulator, freshmart_schema, mzemu, start_emulator

__all__ = ["freshmart_schema", "mzemu"]


def wait_for_file(path: Path, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no report at {path}"
        time.sleep(0.05)
    report: dict[str, object] = json.loads(path.read_text())
    return report


def test_sigusr2_writes_where_the_memory_goes(freshmart_schema: str, tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    env = {"MZEMU_TRACEMALLOC": str(path), "MZEMU_TRACEMALLOC_FRAMES": "2"}
    emulator = start_emulator(freshmart_schema, env=env)
    try:
        os.kill(emulator.process.pid, signal.SIGUSR2)
        report = wait_for_file(path)
    finally:
        emulator.close()
    assert report["reason"] == "SIGUSR2"
    assert report["counts"] == {
        "keys": 3, "rows": 3, "history_times": 0, "history_updates": 0,
        "queued_events": 0, "distinct_rows": 3,
    }  # fmt: skip
    structures = {s["name"]: s for s in report["structures"]}  # type: ignore[attr-defined]
    assert structures["view rows: column values (bytes)"]["count"] == 3
    walked = sum(s["bytes_each"] * s["count"] for s in structures.values()) / 2**20
    assert 0 < walked < report["rss_mb"] <= report["rss_peak_mb"]  # type: ignore[operator]
    traced = report["tracemalloc"]
    assert isinstance(traced, dict) and traced["on"] and traced["frames"] == 2
    assert traced["top_lines"] and traced["top_tracebacks"]


def test_copy_text_made_on_first_use_is_escaped_as_postgres_does(mzemu: Emulator) -> None:
    # the view's rows no longer carry their COPY text from the read: it is made when a
    # COPY first sends the row, from the column values, with the same escapes
    status = "tab\there back\\slash new\nline"
    set_status(mzemu, "order:FM-1001", status)
    with psycopg.connect(mzemu.dsn, autocommit=True) as conn:
        # copy_until fails after 20 s: a value mangled by the escapes never shows
        rows = copy_until(
            conn,
            f"SUBSCRIBE {VIEW} WITH (PROGRESS)",
            lambda rows: any(status in row for row in data(rows)),
        )
    assert [row[3] for row in data(rows) if status in row] == ["order:FM-1001"]
