"""Benchmark: the producer's FETCH loop with its ready-read wait against psycopg's own.

    .venv/bin/python -m bench.fetch_wait [--orders 200000] [--repeat 5]

Uses the devstack PostgreSQL (``.devstack/env``). Builds a private FreshMart schema
with ``--orders`` orders (bench.mzemu's seed) and a private emulator over it, then
reads the view's snapshot — ``--orders`` rows of 18 columns — the way the producer
does (producer/subscribe.py's ``Subscription``: ``DECLARE … SUBSCRIBE … WITH
(PROGRESS, SNAPSHOT = true)``, ``FETCH 2000`` until the progress row after the
snapshot, text loaders registered like the producer's) through two connection
classes, one after the other, ``--repeat`` times each, alternating which goes first:

* ours: ``ReadyReadsConnection`` (reads what the socket already holds without going
  back to the event loop), what ``connection_class()`` gives on psycopg 3.2 and 3.3;
* baseline: plain ``psycopg.AsyncConnection`` (psycopg's own ``wait``), what
  ``connection_class()`` gives on any other psycopg release.

The primary figure is this process's CPU per row (``time.process_time``; the
emulator runs in its own process on the other core), median of the runs;
``events_per_s`` is rows over wall seconds. The last line printed is one JSON
object with the fields README "Development" lists for every bench; ``ratio`` is
ours over the baseline in rows/s, ``cpu_ratio`` ours over the baseline in CPU a row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mzemu import VIEW, max_rss_mb, percentile, private_schema  # noqa: E402
from devstack.harness.mzemu import Emulator, start_emulator  # noqa: E402
from searchsync.producer.documents import register_text_loaders  # noqa: E402
from searchsync.producer.subscribe import (  # noqa: E402
    FETCH_ROWS,
    ReadyReadsConnection,
    Subscription,
)


def log(message: str) -> None:
    print(f"[bench.fetch_wait] {message}", file=sys.stderr, flush=True)


async def read_snapshot(emu: Emulator, cls: type[psycopg.AsyncConnection[Any]]) -> dict[str, Any]:
    """One pass over the snapshot through ``cls``: rows, wall and CPU seconds, and the
    milliseconds of each FETCH."""
    conn = await cls.connect(emu.dsn, autocommit=True)
    try:
        register_text_loaders(conn.adapters)
        sub = Subscription(conn, view=VIEW, envelope="diffs", key_column="order_id")
        await sub.declare(as_of=None, snapshot=True)
        rows = 0
        latencies: list[float] = []
        wall, cpu = time.perf_counter(), time.process_time()
        done = False
        while not done:
            started = time.perf_counter()
            batch = await sub.fetch()
            latencies.append((time.perf_counter() - started) * 1000)
            for row in batch:
                if not row[1]:
                    rows += 1
                elif rows:
                    done = True
        return {
            "rows": rows,
            "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            "latencies": latencies,
        }
    finally:
        await conn.close()


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by CPU a row, and every run's figures."""
    for run in runs:
        run["cpu_us_per_row"] = run["cpu_seconds"] / run["rows"] * 1e6
        run["rows_per_s"] = run["rows"] / run["seconds"]
    median = sorted(runs, key=lambda run: run["cpu_us_per_row"])[len(runs) // 2]
    return {
        "events": median["rows"],
        "seconds": round(median["seconds"], 3),
        "events_per_s": round(statistics.median(run["rows_per_s"] for run in runs)),
        "cpu_us_per_row": round(statistics.median(run["cpu_us_per_row"] for run in runs), 3),
        "runs": [
            {
                "rows_per_s": round(run["rows_per_s"]),
                "cpu_us_per_row": round(run["cpu_us_per_row"], 3),
            }
            for run in runs
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000, help="snapshot rows (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each class (5)")
    args = parser.parse_args(argv)
    classes: dict[str, type[psycopg.AsyncConnection[Any]]] = {
        "ready_reads": ReadyReadsConnection,
        "psycopg_wait": psycopg.AsyncConnection,
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in classes}
    with private_schema(args.orders) as schema:
        started = time.perf_counter()
        emu = start_emulator(
            schema,
            tick_ms=100,
            retain_ms=600_000,
            env={"MZEMU_MAX_BUFFERED_BYTES": str(8 << 30), "MZEMU_LOG_LEVEL": "WARNING"},
            timeout=600,
        )
        log(f"emulator loaded the view in {time.perf_counter() - started:.1f}s")
        try:
            for round_ in range(args.repeat):
                order = list(classes) if round_ % 2 == 0 else list(reversed(classes))
                for name in order:
                    run = asyncio.run(read_snapshot(emu, classes[name]))
                    runs[name].append(run)
                    log(
                        f"{name}: {run['rows']} rows in {run['seconds']:.2f}s, "
                        f"{run['cpu_seconds'] / run['rows'] * 1e6:.2f} µs CPU a row"
                    )
        finally:
            emu.close()
    ours, base = summary(runs["ready_reads"]), summary(runs["psycopg_wait"])
    latencies = [ms for run in runs["ready_reads"] for ms in run["latencies"]]
    result = {
        "scenario": "fetch_wait_snapshot",
        "events": ours["events"],
        "seconds": ours["seconds"],
        "events_per_s": ours["events_per_s"],
        "measures": f"the view's snapshot read with FETCH {FETCH_ROWS} through "
        "ReadyReadsConnection (text loaders, like the producer)",
        "cpu_us_per_row": ours["cpu_us_per_row"],
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_of": f"one FETCH {FETCH_ROWS} (ready reads)",
        "max_rss_mb": round(max_rss_mb(os.getpid()), 1),
        "max_rss_of": "this process (both classes)",
        "baseline": {
            "what": "the same reads through plain psycopg.AsyncConnection (psycopg's wait), "
            "same run, alternating",
            "events": base["events"],
            "seconds": base["seconds"],
            "events_per_s": base["events_per_s"],
            "cpu_us_per_row": base["cpu_us_per_row"],
        },
        "ratio": round(ours["events_per_s"] / base["events_per_s"], 3),
        "cpu_ratio": round(ours["cpu_us_per_row"] / base["cpu_us_per_row"], 3),
        "psycopg": psycopg.__version__,
        "runs": {"ready_reads": ours["runs"], "psycopg_wait": base["runs"]},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
