"""Benchmark: ``searchsync resync`` of a FreshMart view under live load, phase by phase.

    .venv/bin/python -m bench.resync [--orders 25000] [--rate 50] [--consumers 2]

Builds the e2e tests' pipeline (devstack.harness.pipeline: a private FreshMart schema
seeded by devstack's generator, a private emulator and redis-server, the devstack's
OpenSearch, a real producer and ``--consumers`` consumers), waits until the view
is indexed, starts the FreshMart load generator at ``--rate`` changes/s, runs
``searchsync resync --yes --json`` while it writes, stops the load, and checks the
result with ``searchsync verify``. The last line printed is one JSON object: the
resync's own per-step seconds, its wall time, rows loaded, and the verify.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from devstack.harness.pipeline import CLI, pipeline_of
from devstack.harness.producer import start_load


def _resync(env: dict[str, str]) -> tuple[float, dict[str, Any], str]:
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), "resync", "--yes", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"resync failed ({done.returncode}): {done.stdout} {done.stderr}")
    return wall, json.loads(done.stdout), done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.resync")
    parser.add_argument("--orders", type=int, default=25_000)
    parser.add_argument("--rate", type=float, default=50.0, help="load changes/s during resync")
    parser.add_argument("--consumers", type=int, default=2)
    args = parser.parse_args(argv)
    timeout = 120 + args.orders / 500
    with pipeline_of(orders=args.orders, partitions=8, realistic=True) as pipe:
        pipe.stack.producer(**pipe.env())
        for n in range(args.consumers):
            pipe.consumer(f"c{n + 1}")
        started = time.monotonic()
        pipe.wait_synced(timeout=timeout)
        indexed = time.monotonic() - started
        load = start_load(pipe.stack, rate=args.rate, seconds=3600)
        try:
            time.sleep(3)
            wall, result, progress = _resync(pipe.env())
        finally:
            load.send_signal(signal.SIGTERM)
            load.communicate(timeout=60)
        pipe.wait_synced(timeout=timeout)
        verify = pipe.verify(settle=30)
    print(progress, file=sys.stderr)
    summary = {
        "orders": args.orders,
        "load_rate": args.rate,
        "consumers": args.consumers,
        "initial_index_seconds": round(indexed, 1),
        "resync_wall_seconds": round(wall, 2),
        "resync_step_seconds": result["seconds"],
        "rows": result["rows"],
        "written": result["written"],
        "newer_live": result["newer_live"],
        "as_of_minus_high_water_ms": result["as_of"] - result["high_water"],
        "verify_ok": verify["ok"],
        "view_count": verify["view_count"],
        "index_count": verify["index_count"],
    }
    print(json.dumps(summary))
    return 0 if verify["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
