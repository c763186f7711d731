"""Where the emulator's memory goes, on a backlog drain and under made-up load.

    .venv/bin/python -m bench.emulator_memory [--orders 200000] [--synthetic-orders 20000]
        [--synthetic-rate 20000] [--seconds 60] [--frames 0] [--quick]

Not a speed bench: the emulator (devstack.mzemu) is the stand-in for Materialize, not
the product, and this says what holds its resident memory. Two pipelines, built as
bench.drain and bench.e2e build theirs (devstack.harness.pipeline, the harness'
emulator settings: tick 25 ms, history retained 600 s; every searchsync setting at its
production default), each with the emulator's memory report on
(``MZEMU_TRACEMALLOC``, devstack/mzemu/memory.py):

- ``drain``: ``--orders`` orders waiting in the emulator, then a producer and two
  consumers until ``_count`` equals the view (bench.drain's run);
- ``synthetic``: ``--synthetic-orders`` orders synced, then the emulator's made-up
  changes at ``--synthetic-rate``/s for ``--seconds`` (bench.e2e's ``--synthetic-rates``).

For each: the emulator's RSS after loading the view (before any subscription), its
largest RSS while the pipeline ran (sampled as bench.processes does, every 50 ms in the
drain, every second under load), and the report the emulator wrote on SIGUSR2 at the
end: RSS then, the structures sized by walking them, the allocators' free memory and,
with ``--frames`` > 0, tracemalloc's top allocation sites (tracing slows the emulator
and adds its own memory: ``--frames 0`` gives the RSS of an untraced emulator with the
same walk). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import AsyncOpenSearch

from bench.drain import searchable_count
from bench.e2e import production
from bench.processes import Sampler, rss_bytes
from bench.saved import common_arguments, emit
from devstack.harness.consumer import ConsumerProcess
from devstack.harness.pipeline import Pipeline, pipeline_of
from devstack.harness.producer import ProducerProcess

__all__ = ["main"]

_MB = 2**20
# a traced emulator loads a 200,000-row view several times slower than the harness'
# default 30 s allows on a busy box
EMULATOR_START_S = 600.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emulator_rss_mb(pid: int) -> float:
    return round(rss_bytes(Path(f"/proc/{pid}/statm").read_text()) / _MB, 1)


def request_report(pid: int, path: Path, timeout: float = 1800.0) -> dict[str, Any]:
    """SIGUSR2 to the emulator, then its report from ``path``. Raises TimeoutError."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            report: dict[str, Any] = json.loads(path.read_text())
            return report
        time.sleep(0.2)
    raise TimeoutError(f"the emulator wrote no memory report to {path} in {timeout:.0f}s")


def start_pipeline(pipe: Pipeline, consumers: int, sampler: Sampler) -> None:
    env = production(pipe.env())
    producer = ProducerProcess(env, pipe.stack.log_dir).start()
    pipe.stack.producers.append(producer)
    assert producer.proc is not None
    producer_pid = producer.proc.pid
    sampler.add("producer", lambda: [producer_pid])
    for n in range(consumers):
        consumer = ConsumerProcess(env, f"c{n + 1}", pipe.stack.log_dir)
        pipe.consumers[consumer.name] = consumer
        sampler.add(f"consumer {consumer.name}", lambda pid=consumer.proc.pid: [pid])  # type: ignore[misc]
    emulator_pid = pipe.stack.emulator.process.pid
    sampler.add("emulator", lambda: [emulator_pid])


def emulator_env(args: argparse.Namespace, report: Path) -> dict[str, str]:
    return {"MZEMU_TRACEMALLOC": str(report), "MZEMU_TRACEMALLOC_FRAMES": str(args.frames)}


async def drain(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report_path = workdir / "drain.json"
    with pipeline_of(
        orders=args.orders, partitions=8, realistic=True,
        emulator_env=emulator_env(args, report_path), emulator_timeout=EMULATOR_START_S,
    ) as pipe:  # fmt: skip
        rows = view_rows(pipe)
        pid = pipe.stack.emulator.process.pid
        loaded = emulator_rss_mb(pid)
        say(f"drain: {rows:,} rows loaded, emulator RSS {loaded} MB")
        sampler = Sampler()
        start_pipeline(pipe, 2, sampler)
        seconds = await until_searchable(pipe, rows, sampler, args.max_seconds)
        processes = sampler.window()
        say(f"drain: {rows:,} searchable in {seconds:.1f}s; asking for the report")
        report = request_report(pid, report_path)
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rss_loaded_mb": loaded,
        "rss_max_mb": processes["emulator"]["max_rss_mb"],
        "processes": processes,
        "report": report,
    }


def view_rows(pipe: Pipeline) -> int:
    with pipe.stack.pg() as pg:
        row = pg.execute(f"SELECT count(*) FROM {pipe.stack.VIEW}").fetchone()
    return int(row[0]) if row else 0


async def until_searchable(
    pipe: Pipeline, rows: int, sampler: Sampler, max_seconds: float
) -> float:
    """Seconds until ``_count`` reaches ``rows``, sampling the processes meanwhile.
    Raises SystemExit after ``max_seconds``."""
    host, port = pipe.os_env["OS_HOST"], pipe.os_env["OS_PORT"]
    search = AsyncOpenSearch(hosts=[{"host": host, "port": int(port)}], timeout=60)
    clock = time.monotonic()
    try:
        seen = 0
        while seen < rows:
            if time.monotonic() - clock > max_seconds:
                raise SystemExit(f"bench: {seen:,} of {rows:,} searchable after "
                                 f"{max_seconds:.0f}s")  # fmt: skip
            await asyncio.sleep(0.05)
            seen = await searchable_count(search, pipe.alias)
            sampler.sample()
    finally:
        await search.close()
    return time.monotonic() - clock


async def synthetic(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report_path = workdir / "synthetic.json"
    with pipeline_of(
        orders=args.synthetic_orders, partitions=8, realistic=True,
        emulator_env=emulator_env(args, report_path), emulator_timeout=EMULATOR_START_S,
    ) as pipe:  # fmt: skip
        pid = pipe.stack.emulator.process.pid
        loaded = emulator_rss_mb(pid)
        sampler = Sampler()
        start_pipeline(pipe, 2, sampler)
        # _count, not wait_synced: with production progress (1 s) and the harness' 25 ms
        # ticks, every partition's applied frontier is rarely at the checkpoint at once
        await until_searchable(pipe, view_rows(pipe), sampler, args.max_seconds)
        synced = emulator_rss_mb(pid)
        say(f"synthetic: {args.synthetic_orders:,} orders synced, emulator RSS {synced} MB")
        sampler.window()
        await admin(pipe, f"mzemu_synthetic_rate({args.synthetic_rate})")
        until = time.monotonic() + args.seconds
        samples = []
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            samples.append(sampler.sample()["emulator"])
        processes = sampler.window()
        say(f"synthetic: {args.synthetic_rate:,}/s for {args.seconds:.0f}s, emulator RSS "
            f"{samples[-1] if samples else '?'} MB; asking for the report")  # fmt: skip
        report = request_report(pid, report_path)
        await admin(pipe, "mzemu_synthetic_rate(0)")
    return {
        "orders": args.synthetic_orders,
        "rate": args.synthetic_rate,
        "seconds": args.seconds,
        "rss_loaded_mb": loaded,
        "rss_synced_mb": synced,
        "rss_max_mb": processes["emulator"]["max_rss_mb"],
        "rss_each_second_mb": samples,
        "processes": processes,
        "report": report,
    }


async def admin(pipe: Pipeline, call: str) -> None:
    # a busy emulator can be slow to accept a connection (as in bench.e2e)
    async with await psycopg.AsyncConnection.connect(
        pipe.stack.emulator.dsn, autocommit=True, connect_timeout=120
    ) as conn:
        await conn.execute(f"SELECT {call}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench_emulator_memory_"))
    result: dict[str, Any] = {
        # a traced run is saved beside the untraced one: its RSS includes tracemalloc's
        "scenario": "emulator_memory" if args.frames == 0 else "emulator_memory_traced",
        "frames": args.frames,
        "note": "the emulator's memory report (devstack/mzemu/memory.py) at the end of "
        "each run; the harness' emulator keeps 600 s of history (MZEMU_RETAIN_MS)",
    }
    if args.orders:
        result["drain"] = await drain(args, workdir)
    if args.synthetic_rate:
        result["synthetic"] = await synthetic(args, workdir)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.emulator_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--orders", type=int, default=200_000, help="0: no drain run")
    parser.add_argument("--synthetic-orders", type=int, default=20_000)
    parser.add_argument("--synthetic-rate", type=int, default=20_000, help="0: no such run")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=0, help="tracemalloc frames; 0: off")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    common_arguments(parser, "a smoke run of seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.synthetic_orders, args.synthetic_rate = 2_000, 1_000, 500
        args.seconds = 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(asyncio.run(run(args)), args, "bench.emulator_memory", argv or sys.argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
