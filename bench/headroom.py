"""Benchmark: where the producer's rows/s spread comes from, and its stable figure.

    .venv/bin/python -m bench.headroom [--orders 200000] [--rounds 5]
                                       [--conditions shared,pinned,aof_off,pinned_aof_off]
                                       [--against CHECKOUT] [--quick] [--save]

bench.producer's ratio (producer rows/s over ``redis-benchmark -P 32`` XADD/s) moves
between runs of the same code on this 2-core box. Three suspects share the cores with
the producer: the emulator streaming the snapshot, Redis (and its AOF), and the
scheduler placing all three. This bench runs the same 200,000-row backlog (a private
emulator and redis-server, as bench.producer builds them) under each condition, the
conditions interleaved round by round so that a slow minute of the box falls on all
of them alike:

- ``shared``: as in production, every process may run on either core;
- ``pinned``: the producer alone on CPU 0, the emulator and Redis on CPU 1 (the
  baseline's redis-benchmark on CPU 0, where the producer ran);
- ``aof_off``: as ``shared`` with Redis' ``appendonly no`` (no AOF write or fsync);
- ``pinned_aof_off``: both.

Per condition: rows/s, the producer's CPU µs per row (from "SUBSCRIBE started" to
"Snapshot complete"), the baseline XADD/s measured after each run under the same
condition, the ratio, and the emulator's and Redis' CPU per row, each as median,
min, max and coefficient of variation (stdev / mean) over the rounds. The figure with
the smallest spread is the one to quote; the conditions show what the spread of the
others comes from.

``--against CHECKOUT`` (another source tree of searchsync, e.g. ``git worktree add
/tmp/before <commit>`` with its C extension built) compares two versions of the
producer on the same box: each round runs CHECKOUT's producer right beside this
tree's under the same condition (which goes first alternates), and the result adds
``against`` (CHECKOUT's figures, the same shape) and ``paired_cpu_ratio`` (this
tree's producer CPU a row over CHECKOUT's, round by round: the pairing keeps a slow
minute of the box out of the comparison).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from bench.processes import set_affinity
from bench.producer import (
    PARTITIONS,
    ROOT,
    devstack_dsn,
    private_emulator,
    private_redis,
    redis_benchmark,
    run_backlog,
    say,
    settle,
)
from bench.saved import common_arguments, emit
from devstack.freshmart.seed import seed_database

__all__ = ["CONDITIONS", "main", "spread"]

VIEW = "orders_search_source_mv"
PRODUCER_CPU = {0}
OTHERS_CPU = {1}
CONDITIONS = ("shared", "pinned", "aof_off", "pinned_aof_off")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the coefficient of variation (0 for fewer than two values)."""
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if len(values) > 1 and mean else 0.0
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "cv": round(cv, 3),
    }


def one_run(
    condition: str,
    emulator: tuple[int, Any],
    redis_port: int,
    rows: int,
    pg: psycopg.Connection[Any],
    *,
    checkout: Path = ROOT,
) -> dict[str, Any]:
    client = redis.Redis(port=redis_port)
    redis_pid = int(client.info("server")["process_id"])
    pinned = condition.startswith("pinned")
    all_cpus = set(range(os.cpu_count() or 1))
    set_affinity([emulator[1].pid, redis_pid], OTHERS_CPU if pinned else all_cpus)
    aof = "no" if condition.endswith("aof_off") else "yes"
    if client.config_get("appendonly")["appendonly"] != aof:
        client.config_set("appendonly", aof)  # "yes" starts a rewrite: settle waits for it
    client.close()
    run = run_backlog(
        emulator,
        redis_port,
        rows,
        pg,
        latencies=False,
        affinity=PRODUCER_CPU if pinned else None,
        checkout=checkout,
    )
    settle(redis_port)
    baseline = redis_benchmark(redis_port, 200_000, PRODUCER_CPU if pinned else None)
    return {
        "events_per_s": rows / run["seconds"],
        "producer_cpu_us_per_row": run["producer_us_per_row"],
        "emulator_cpu_us_per_row": run["cpu"]["emulator"] / rows * 1e6,
        "redis_cpu_us_per_row": run["cpu"]["redis"] / rows * 1e6,
        "baseline_xadd_per_s": baseline,
        "ratio": rows / run["seconds"] / baseline,
        "max_rss_mb": run["rss"],
        "c_path": run["c_path"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in (
        "events_per_s",
        "producer_cpu_us_per_row",
        "baseline_xadd_per_s",
        "ratio",
        "emulator_cpu_us_per_row",
        "redis_cpu_us_per_row",
    ):
        figures[name] = spread([run[name] for run in runs])
    figures["max_rss_mb"] = round(max(run["max_rss_mb"] for run in runs), 1)
    figures["runs"] = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()} for run in runs
    ]
    return figures


def conditions_list(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = sorted(set(names) - set(CONDITIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown condition(s) {unknown}; known: {CONDITIONS}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.headroom", description=__doc__)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each condition")
    parser.add_argument("--conditions", type=conditions_list, default=list(CONDITIONS))
    parser.add_argument(
        "--against",
        type=Path,
        help="another searchsync checkout: its producer runs beside this one each round",
    )
    common_arguments(parser, "15,000 orders, two rounds of shared and pinned: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.rounds, args.conditions = 15_000, 2, ["shared", "pinned"]
    if (os.cpu_count() or 1) < 2 and any(c.startswith("pinned") for c in args.conditions):
        parser.error("the pinned conditions need two CPUs")
    if args.against is not None and not (args.against / "producer" / "main.py").is_file():
        parser.error(f"--against {args.against}: not a searchsync checkout (no producer/main.py)")
    return args


def measure(args: argparse.Namespace, dsn: str, schema: str) -> dict[str, Any]:
    """Every condition ``args.rounds`` times, interleaved, over ``schema``'s view."""
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        row = pg.execute(f"SELECT count(*) FROM {VIEW}").fetchone()
        rows = int(row[0]) if row else 0
        by_condition: dict[str, list[dict[str, Any]]] = {c: [] for c in args.conditions}
        against: dict[str, list[dict[str, Any]]] = {c: [] for c in args.conditions}
        trees = [("this", ROOT, by_condition)]
        if args.against is not None:
            trees.append(("against", args.against, against))
        with private_redis() as (redis_port, _), private_emulator(dsn, schema) as emulator:
            for round_ in range(1, args.rounds + 1):
                for condition in args.conditions:
                    # which tree goes first alternates, so neither always gets the warmer box
                    for name, checkout, runs in trees if round_ % 2 else trees[::-1]:
                        run = one_run(condition, emulator, redis_port, rows, pg, checkout=checkout)
                        runs[condition].append(run)
                        say(
                            f"round {round_} {condition} ({name}): "
                            f"{run['events_per_s']:,.0f} rows/s, "
                            f"{run['producer_cpu_us_per_row']:.2f} µs producer CPU a row, "
                            f"baseline {run['baseline_xadd_per_s']:,.0f} XADD/s, "
                            f"ratio {run['ratio']:.2f}"
                        )
    summary = {condition: summarise(runs) for condition, runs in by_condition.items()}
    measured: dict[str, Any] = {"rows": rows, "conditions": summary}
    if args.against is not None:
        measured["against"] = {
            "checkout": str(args.against),
            "conditions": {condition: summarise(runs) for condition, runs in against.items()},
        }
        measured["paired_cpu_ratio"] = {
            condition: spread(
                [
                    mine["producer_cpu_us_per_row"] / theirs["producer_cpu_us_per_row"]
                    for mine, theirs in zip(runs, against[condition], strict=True)
                ]
            )
            for condition, runs in by_condition.items()
        }
    return measured


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = devstack_dsn()
    schema = f"bench_head_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(dsn, autocommit=True) as pg:
            say(f"seeding {args.orders} orders into {schema} …")
            seed_database(
                pg, orders=args.orders, seed=1, as_of=dt.datetime.now(dt.UTC), schema=schema
            )
        measured = measure(args, dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conditions = measured["conditions"]
    # the stable figure: the producer's CPU a row in the condition where it spreads least
    steadiest = min(conditions, key=lambda c: conditions[c]["producer_cpu_us_per_row"]["cv"])
    result = {
        "scenario": "producer_headroom",
        "events": measured["rows"],
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "events_per_s": conditions["shared"]["events_per_s"]["median"]
        if "shared" in conditions
        else None,
        "producer_cpu_us_per_row": conditions[steadiest]["producer_cpu_us_per_row"]["median"],
        "steadiest_condition": steadiest,
        "conditions": conditions,
        "cpus": os.cpu_count(),
    }
    if "against" in measured:
        result["against"] = measured["against"]
        result["paired_cpu_ratio"] = measured["paired_cpu_ratio"]
    emit(result, args, "bench.headroom", sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
