"""Benchmark: a backlog waiting in the emulator → all of it searchable, against the ceiling.

    .venv/bin/python -m bench.drain [--orders 200000] [--consumers 2] [--quick]

A private FreshMart schema seeded with ``--orders`` orders is the backlog: the view's
snapshot, waiting in the emulator before anything of the pipeline runs
(devstack.harness.pipeline: private emulator and redis-server, the devstack's
PostgreSQL and OpenSearch node, a private index). Then the producer and
``--consumers`` consumers start, with the production defaults of every setting, and
the clock runs until ``_count`` (what ``_search`` sees: refreshed documents only)
equals the view's row count. The baseline, measured in the same run right after, is
the raw ``_bulk`` ceiling (bench.ceiling) of as many documents of the same size at
1–4 connections: what the node takes when nothing else runs.

The last line printed is one JSON object (README "Development" lists the fields).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from opensearchpy import AsyncOpenSearch

from bench import ceiling
from bench.e2e import production
from bench.processes import Sampler
from bench.saved import common_arguments, emit, int_list
from devstack.harness.consumer import ConsumerProcess
from devstack.harness.pipeline import pipeline_of
from devstack.harness.producer import ProducerProcess

__all__ = ["main"]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def searchable_count(search: AsyncOpenSearch, alias: str) -> int:
    try:
        return int((await search.count(index=alias))["count"])
    except Exception:  # the index appears when the first consumer starts
        return 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    with pipeline_of(orders=args.orders, partitions=args.partitions, realistic=True) as pipe:
        say(f"seeded {args.orders:,} orders in {time.monotonic() - started:.1f}s")
        with pipe.stack.pg() as pg:
            row = pg.execute(f"SELECT count(*) FROM {pipe.stack.VIEW}").fetchone()
            rows = int(row[0]) if row else 0
        host, port = pipe.os_env["OS_HOST"], pipe.os_env["OS_PORT"]
        search = AsyncOpenSearch(hosts=[{"host": host, "port": int(port)}], timeout=60)
        env = production(pipe.env())
        sampler = Sampler()
        try:
            clock = time.monotonic()
            producer = ProducerProcess(env, pipe.stack.log_dir).start()
            pipe.stack.producers.append(producer)
            assert producer.proc is not None
            producer_pid = producer.proc.pid
            sampler.add("producer", lambda: [producer_pid])
            for n in range(args.consumers):
                consumer = ConsumerProcess(env, f"c{n + 1}", pipe.stack.log_dir)
                pipe.consumers[consumer.name] = consumer
                sampler.add(f"consumer {consumer.name}", lambda pid=consumer.proc.pid: [pid])  # type: ignore[misc]
            emulator_pid = pipe.stack.emulator.process.pid
            sampler.add("emulator", lambda: [emulator_pid])
            sampler.sample()
            seen, deadline = 0, clock + args.max_seconds
            progress_at = clock
            while seen < rows:
                if time.monotonic() > deadline:
                    logs = pipe.stack.log_dir
                    raise SystemExit(f"bench: {seen:,} of {rows:,} searchable after "
                                     f"{args.max_seconds:.0f}s (logs: {logs})")  # fmt: skip
                await asyncio.sleep(0.05)
                seen = await searchable_count(search, pipe.alias)
                sampler.sample()
                if time.monotonic() - progress_at >= 5:
                    progress_at = time.monotonic()
                    say(f"  {seen:,} of {rows:,} searchable after {progress_at - clock:.0f}s")
            seconds = time.monotonic() - clock
            processes = sampler.window()
            say(f"{rows:,} searchable {seconds:.1f}s after the producer started")
            changes = ceiling.order_changes(rows)
            baseline = await ceiling.sweep(
                search, base_url=f"http://{host}:{port}", prefix=f"{pipe.alias}_ceiling",
                changes=changes, bulk=1000, connections=args.ceiling_connections, say=say,
            )  # fmt: skip
        finally:
            await search.close()
    rate = rows / seconds
    return {
        "scenario": "backlog_drain_to_searchable",
        "events": rows,
        "seconds": round(seconds, 2),
        "events_per_s": round(rate, 1),
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_rss_mb": max(s["max_rss_mb"] for n, s in processes.items() if n != "emulator"),
        "baseline": baseline,
        "ratio": round(rate / baseline["events_per_s"], 3),
        "consumers": args.consumers,
        "partitions": args.partitions,
        "processes": processes,
        "note": "from the producer's start until _count (refreshed documents) equals the "
        "view; the ceiling indexes as many documents of the same size, nothing else running",
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--ceiling-connections", type=int_list, default=[1, 2, 3, 4])
    common_arguments(parser, "a smoke run of seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.ceiling_connections = 5_000, [1, 2]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(asyncio.run(run(args)), args, "bench.drain", argv or sys.argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
