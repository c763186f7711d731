"""Benchmark: the whole pipeline under sustained load, at a set of offered rates.

    .venv/bin/python -m bench.e2e [--rates 100,1000,5000,max] [--seconds 60] [--warmup 10]
                                  [--consumers 2] [--orders 20000] [--quick]

PostgreSQL writes (the FreshMart load generator, one transaction a change) → the
Materialize emulator → a producer → Redis → consumers → OpenSearch, built as the e2e
tests build it (devstack.harness.pipeline: a private FreshMart schema, emulator and
redis-server, the devstack's PostgreSQL and OpenSearch node, a private index), with
the production defaults of every setting. For each offered rate the load runs
``--warmup`` + ``--seconds`` s; only the last ``--seconds`` are measured:

- achieved rate: changes committed in the window / its length;
- COMMIT → searchable (``_search``) and → retrievable by id (``mget``), p50/p95/p99
  (devstack.searchable; at high rates a sample of the changes, stated as ``tracked``);
  the searchable latency split at each change's Materialize timestamp (the
  ``sync_version`` its search hit shows): COMMIT → ts (the wait for the tick and the
  emulator's capture) and ts → searchable (pipeline, refresh, poll), leaving out a
  change whose order changed again before it was seen (the hit may show that ts);
- the buffer (changes written, not acknowledged), the entries not yet delivered
  (lag) and the oldest partition's freshness, once a second;
- CPU seconds and max RSS of every process: producer, each consumer, emulator,
  PostgreSQL, Redis, OpenSearch and the load generator itself (bench.processes);
- ``limit``: "writer" when the load generator reached less than 90 % of the offered
  rate while the pipeline's buffer stayed small (the pipeline kept up with what it
  was given), "pipeline" when the buffer grew, otherwise null.

The emulator's tick (``--tick-ms``, default 1000 ms: Materialize's default timestamp
interval) and the index's refresh interval (``--refresh-interval``, the consumers'
OS_REFRESH_INTERVAL) bound the searchable latency from below; both are in the output.
The raw ``_bulk`` ceiling (bench.ceiling) of the same node, measured in the same run,
is the baseline of the highest achieved rate.

- per change, the pipeline-added latency: its timestamp's first row reaching the
  producer → acknowledged. The producer reads the emulator through bench.arrivals, a
  pgwire tap that stamps each timestamp's first row as it passes; the acknowledgement
  is read from Redis (bench.acktimer, every 10 ms). Beside it, from Redis alone:
  Materialize timestamp → in Redis → acknowledged (ts → in Redis includes the
  emulator's own delay in handing the rows out).
- ``--synthetic-rates``: the emulator's made-up changes (no writer, no PostgreSQL
  transaction), the source that is not the limit, for the pipeline's own ceiling.

The last line printed is one JSON object (README "Development" lists the fields).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from bench import ceiling
from bench.acktimer import AckTimer, weighted_percentiles_ms
from bench.processes import Sampler, children_of, pid_file
from bench.saved import common_arguments, emit, int_list
from devstack.harness.consumer import ConsumerProcess
from devstack.harness.mzemu import pg_dsn
from devstack.harness.pipeline import Pipeline, pipeline_of
from devstack.harness.producer import PYTHON, REPO, ProducerProcess
from devstack.searchable import Tracker
from searchsync.common import status as status_report
from searchsync.common.config import Settings
from searchsync.common.keys import Keys
from searchsync.common.partition_state import merge_counts, queue_counts

__all__ = ["main", "production"]

DEVSTACK = REPO / ".devstack"
# The settings that address the services and name the data; devstack.harness tunes
# many others for fast tests (leases of 1-2 s, backpressure at 1,000,000 changes, 0.2 s
# retries …), and the bench drops those so that every one keeps its production default.
ADDRESSING = (
    "MZ_", "REDIS_", "OS_HOST", "OS_PORT", "OS_INDEX_NAME", "STREAM_PARTITIONS", "VIEW_NAME",
    "LOG_", "METRICS_PORT", "CONSUMER_NAME",
)  # fmt: skip
SETTING_NAMES = frozenset(f.encode_name for f in msgspec.structs.fields(Settings))


def production(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the test tunings: only the addressing settings are kept."""
    return {k: v for k, v in env.items() if k not in SETTING_NAMES or k.startswith(ADDRESSING)}


MAX_OFFERED = 100_000.0  # "max": more than the writer can reach on any box we know
TRACKED_PER_S = 50.0  # at most this many changes a second are followed for latency
WRITER_MAX_CONNECTIONS = 96
SMALL_BUFFER = 2_000  # changes: below this at the window's end, the pipeline kept up
BACKPRESSURE_THRESHOLD: int = next(
    f.default for f in msgspec.structs.fields(Settings) if f.name == "backpressure_threshold"
)


def start_tap(host: str, port: int, out: str) -> tuple[subprocess.Popen[str], int]:
    """bench.arrivals in front of the emulator; returns it and the port it listens on."""
    tap = subprocess.Popen(
        [str(PYTHON), "-m", "bench.arrivals", "--upstream", f"{host}:{port}", "--out", out],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tap.stdout is not None
    line = tap.stdout.readline()
    if not line.startswith("listening on "):
        tap.kill()
        raise RuntimeError(f"bench.arrivals did not start: {line!r}")
    return tap, int(line.split()[-1])


def writer_connections(offered: float) -> int:
    """Transactions in flight for the load generator: each COMMIT waits for an fsync
    (tens of ms on a busy disk), so one connection writes ~30 changes/s; PostgreSQL's
    max_connections (200, devstack) bounds it, with room for the emulator and tests."""
    return max(8, min(WRITER_MAX_CONNECTIONS, int(offered / 30)))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def latency(seconds: list[float]) -> dict[str, Any]:
    """p50/p95/p99 in ms (nearest rank) and how many changes they are of."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "tracked": 0}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "tracked": len(ordered),
        # the CDF at every percent, for bench.report's plots
        "cdf_ms": [at(q / 100) for q in range(101)],
    }  # fmt: skip


@dataclass
class Window:
    """What one measured window saw (Run.observe)."""

    acks: AckTimer
    series: list[dict[str, Any]] = field(default_factory=list)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts_from: tuple[int, int] = (0, 0)  # written, acknowledged
    counts_to: tuple[int, int] = (0, 0)
    ended: float = 0.0

    @property
    def buffer_at_end(self) -> int:
        return int(self.series[-1]["buffer"]) if self.series else 0

    @property
    def buffer_max(self) -> int:
        return max((int(s["buffer"]) for s in self.series), default=0)

    def report(self, seconds: float) -> dict[str, Any]:
        return {
            # per change: its timestamp's first row reaching the producer (bench.arrivals)
            # → acknowledged, the pipeline-added latency; then from Redis alone
            # (bench.acktimer) ts → acknowledged, which adds the emulator's hand-out delay
            "pipeline_added": weighted_percentiles_ms(self.acks.arrival_to_ack),
            "without_arrival": self.acks.without_arrival,
            "ts_to_acknowledged": weighted_percentiles_ms(self.acks.ts_to_ack),
            "ts_to_redis": weighted_percentiles_ms(self.acks.ts_to_redis),
            "redis_to_acknowledged": weighted_percentiles_ms(self.acks.redis_to_ack),
            "never_acknowledged_within_30s": self.acks.unacknowledged,
            "buffer_at_end": self.buffer_at_end,
            "buffer_max": self.buffer_max,
            "processes": self.processes,
            "series": self.series,
        }


class Run:
    """One pipeline, built once; :meth:`at_rate` for each offered rate."""

    def __init__(self, args: argparse.Namespace, pipe: Pipeline) -> None:
        self.args = args
        self.pipe = pipe
        self.workdir = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
        stack = pipe.stack
        self.keys = Keys(stack.VIEW, stack.partitions)
        env = {**production(pipe.env()), "OS_REFRESH_INTERVAL": args.refresh_interval}
        self.arrivals = str(self.workdir / "arrivals.txt")
        self.tap, tap_port = start_tap(stack.emulator.host, stack.emulator.port, self.arrivals)
        # only the producer reads through the tap: its arrivals are the producer's
        self.producer = ProducerProcess({**env, "MZ_PORT": str(tap_port)}, stack.log_dir).start()
        stack.producers.append(self.producer)
        self.consumers = []
        for n in range(args.consumers):
            consumer = ConsumerProcess(env, f"c{n + 1}", stack.log_dir)
            pipe.consumers[consumer.name] = consumer
            self.consumers.append(consumer)
        host, port = pipe.os_env["OS_HOST"], pipe.os_env["OS_PORT"]
        self.base_url = f"http://{host}:{port}"
        self.search = AsyncOpenSearch(hosts=[{"host": host, "port": int(port)}], timeout=60)
        self.redis = Redis(port=stack.redis.port)
        self.sampler = Sampler()
        self._processes()

    def _processes(self) -> None:
        stack, add = self.pipe.stack, self.sampler.add
        producer = self.producer.proc
        assert producer is not None
        add("producer", lambda: [producer.pid])
        for consumer in self.consumers:
            pid = consumer.proc.pid
            add(f"consumer {consumer.name}", lambda pid=pid: [pid])  # type: ignore[misc]
        add("emulator", lambda: [stack.emulator.process.pid])
        add("arrival tap", lambda: [self.tap.pid])
        redis_proc = stack.redis.proc
        assert redis_proc is not None
        add("redis", lambda: [redis_proc.pid])
        postmaster = pid_file(DEVSTACK / "postgres" / "data" / "postmaster.pid")
        add("postgresql", lambda: children_of(postmaster) if postmaster else [])
        jvm = pid_file(DEVSTACK / "opensearch" / "opensearch.pid")
        add("opensearch", lambda: [jvm] if jvm else [])

    async def buffer_sample(self) -> dict[str, Any]:
        raw = await status_report.gather(self.redis, self.keys, "searchsync")
        now = status_report.now_ms()
        report = status_report.build(
            raw, self.keys, view=self.pipe.stack.VIEW, group="searchsync", now_ms=now,
            member_ttl_ms=15_000,
        )  # fmt: skip
        fresh = [p.freshness_seconds for p in report.partitions if p.freshness_seconds is not None]
        return {
            "buffer": report.buffer,
            "lag": sum(p.lag or 0 for p in report.partitions),
            "freshness_s": round(max(fresh), 2) if fresh else None,
        }

    async def observe(
        self, running: Callable[[], bool], measure_from: float, each: Callable[[], Awaitable[None]]
    ) -> Window:
        """Sample everything until ``running()`` is false; ``each`` runs every 0.1 s.

        Before ``measure_from`` (epoch s) nothing is counted: CPU, acknowledgements
        and the buffer series start there. After the source stops, waits up to 30 s
        for what is still unacknowledged.
        """
        window = Window(AckTimer(self.redis, self.keys, arrivals=self.arrivals))
        stop = asyncio.Event()
        acks_task: asyncio.Task[None] | None = None
        next_second = time.monotonic()
        while running():
            await each()
            if time.monotonic() >= next_second:
                next_second += 1.0
                rss = self.sampler.sample()
                if acks_task is None and time.time() >= measure_from:
                    self.sampler.window()  # what the warm-up used is not counted
                    await window.acks.start()
                    window.counts_from = await self.counts()
                    acks_task = asyncio.create_task(window.acks.run(stop))
                if acks_task is not None:
                    window.series.append({"t": round(time.time() - measure_from, 1),
                                          **await self.buffer_sample(), "rss_mb": rss})  # fmt: skip
            await asyncio.sleep(0.1)
        window.ended = time.time()
        window.counts_to = await self.counts()
        self.sampler.sample()
        window.processes = self.sampler.window()
        tail_until = time.monotonic() + 30
        while window.acks.unacknowledged and time.monotonic() < tail_until:
            await each()
            await asyncio.sleep(0.1)
        stop.set()
        if acks_task is not None:
            await acks_task
        return window

    async def counts(self) -> tuple[int, int]:
        """Changes written and acknowledged so far, over all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_counts(pipe, self.keys)
            counts = merge_counts(await pipe.execute())
        written = sum(int(v) for k, v in counts.items() if k.startswith(b"written:"))
        acked = sum(int(v) for k, v in counts.items() if k.startswith(b"acked:"))
        return written, acked

    async def at_rate(self, label: str, offered: float) -> dict[str, Any]:
        """The FreshMart writer at ``offered`` changes/s: the latency users feel."""
        args = self.args
        record = self.workdir / f"load_{label}.jsonl"
        load = subprocess.Popen(  # noqa: ASYNC220 (started once per rate, returns at once)
            [str(PYTHON), "-m", "devstack.freshmart.load", "--rate", str(offered),
             "--seconds", str(args.warmup + args.seconds), "--seed", str(args.seed),
             "--schema", self.pipe.stack.schema, "--dsn", pg_dsn(), "--record", str(record),
             "--connections", str(writer_connections(offered))],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.sampler.add("load generator", lambda: [load.pid])
        measure_from = time.time() + args.warmup
        sample = max(1, round(min(offered, MAX_OFFERED) / TRACKED_PER_S))
        tracker = Tracker(self.search, self.pipe.alias, record, sample, measure_from)
        window = await self.observe(lambda: load.poll() is None, measure_from, tracker.poll)
        self.sampler.remove("load generator")
        _, load_err = load.communicate()
        if load.returncode != 0:
            raise RuntimeError(f"load generator exited {load.returncode}: {load_err[-2000:]!r}")
        tail_until = time.monotonic() + 30
        while tracker.pending and time.monotonic() < tail_until:
            await tracker.poll()
            await asyncio.sleep(0.1)
        tracker.read_new()
        seconds = window.ended - measure_from
        committed = sum(1 for ts in tracker.committed if measure_from <= ts <= window.ended)
        achieved = committed / seconds
        limit = None
        if achieved < 0.9 * offered:
            limit = "writer" if window.buffer_at_end < SMALL_BUFFER else "pipeline"
        result = {
            "source": "writer",
            "offered": label,
            "offered_per_s": offered,
            "achieved_per_s": round(achieved, 1),
            "seconds": round(seconds, 1),
            "changes": committed,
            "searchable": latency(tracker.searchable),
            # split at the change's Materialize timestamp: the tick's wait and the
            # emulator's capture, then the pipeline, the refresh and the poll
            "searchable_split": {
                "commit_to_ts": latency(tracker.commit_to_ts),
                "ts_to_searchable": latency(tracker.ts_to_searchable),
            },
            "retrievable_by_id": latency(tracker.retrievable),
            "never_searchable_within_30s": len(tracker.pending),
            "tracked_every": sample,
            "writer_connections": writer_connections(offered),
            "limit": limit,
            **window.report(seconds),
        }
        split = result["searchable_split"]
        say(f"{label}: offered {offered:,.0f}/s, achieved {achieved:,.1f}/s, searchable "
            f"p95 {result['searchable']['p95_ms']} ms (COMMIT → ts "
            f"{split['commit_to_ts']['p95_ms']}, ts → searchable "
            f"{split['ts_to_searchable']['p95_ms']}), buffer max {result['buffer_max']}, "
            f"limit {limit}")  # fmt: skip
        return result

    async def at_synthetic_rate(self, rate: int) -> dict[str, Any]:
        """The emulator's made-up changes at ``rate``/s: the pipeline's own ceiling.

        No writer and no PostgreSQL transaction is involved, so whatever cannot keep
        up is the pipeline (or the emulator handing rows out, whose CPU is reported).
        """
        args = self.args
        await self.emulator_admin(f"mzemu_synthetic_rate({rate})")
        started = time.time()
        measure_from = started + args.warmup
        until = measure_from + args.seconds

        async def nothing() -> None:
            return None

        try:
            window = await self.observe(lambda: time.time() < until, measure_from, nothing)
        finally:
            await self.emulator_admin("mzemu_synthetic_rate(0)")
        seconds = window.ended - measure_from
        written = window.counts_to[0] - window.counts_from[0]
        acknowledged = window.counts_to[1] - window.counts_from[1]
        limit = None
        if acknowledged < 0.9 * rate * seconds:
            # the producer pauses at BACKPRESSURE_THRESHOLD and leaves the rest waiting in
            # the emulator, so a small buffer at the end no longer means it kept up:
            # a buffer that reached the threshold says the consumers were behind
            behind = window.buffer_max >= BACKPRESSURE_THRESHOLD or (
                window.buffer_at_end >= SMALL_BUFFER
            )
            limit = "pipeline" if behind else "emulator"
        result = {
            "source": "emulator (synthetic)",
            "offered": f"synthetic {rate}",
            "offered_per_s": rate,
            "achieved_per_s": round(acknowledged / seconds, 1),
            "written_per_s": round(written / seconds, 1),
            "seconds": round(seconds, 1),
            "changes": acknowledged,
            "limit": limit,
            **window.report(seconds),
        }
        say(f"synthetic {rate}: written {written / seconds:,.0f}/s, acknowledged "
            f"{acknowledged / seconds:,.0f}/s, ts→ack p95 "
            f"{result['ts_to_acknowledged']['p95_ms']} ms, buffer max {result['buffer_max']}, "
            f"limit {limit}")  # fmt: skip
        return result

    async def emulator_admin(self, call: str) -> None:
        emulator = self.pipe.stack.emulator
        # an emulator handing out tens of thousands of made-up rows a tick can take
        # longer than the harness' 10 s to accept a connection: a control call waits
        async with await psycopg.AsyncConnection.connect(
            emulator.dsn, autocommit=True, connect_timeout=120
        ) as conn:
            await conn.execute(f"SELECT {call}")

    async def close(self) -> None:
        await self.search.close()
        await self.redis.aclose()
        self.tap.terminate()
        self.tap.wait(10)


def parse_rates(text: str) -> list[str]:
    rates = [part.strip() for part in text.split(",")]
    for rate in rates:
        if rate != "max" and not (rate.replace(".", "", 1).isdigit() and float(rate) > 0):
            raise argparse.ArgumentTypeError(f"not a rate: {rate!r} (numbers or 'max')")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=parse_rates, default=parse_rates("100,1000,5000,max"))
    parser.add_argument("--seconds", type=float, default=60.0, help="measured, per rate")
    parser.add_argument("--warmup", type=float, default=10.0, help="not measured, per rate")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the view")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--tick-ms", type=int, default=1000,
        help="the emulator's timestamp interval (default 1000: Materialize's default)",
    )  # fmt: skip
    parser.add_argument(
        "--refresh-interval", default="1s",
        help="OS_REFRESH_INTERVAL of the index the consumers create (default 1s)",
    )  # fmt: skip
    parser.add_argument("--ceiling-events", type=int, default=50_000)
    parser.add_argument(
        "--synthetic-rates", type=int_list, default=[],
        help="then the emulator's made-up changes at these rates (e.g. 5000,20000,50000)",
    )  # fmt: skip
    common_arguments(parser, "a smoke run of about a minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.warmup = ["100", "1000"], 6.0, 2.0
        args.synthetic_rates = [2000]
        args.orders, args.ceiling_events = 3_000, 10_000
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ticks = {"MZEMU_TICK_MS": str(args.tick_ms)}
    with pipeline_of(
        orders=args.orders, partitions=args.partitions, realistic=True, emulator_env=ticks
    ) as pipe:
        bench = Run(args, pipe)
        try:
            started = time.monotonic()
            pipe.wait_synced(timeout=120 + args.orders / 500)
            say(f"{args.orders:,} orders indexed in {time.monotonic() - started:.1f}s")
            baseline = await ceiling.sweep(
                bench.search, base_url=bench.base_url, prefix=f"{pipe.alias}_ceiling",
                changes=ceiling.order_changes(args.ceiling_events), bulk=1000,
                connections=[1, 2], say=say,
            )  # fmt: skip
            rates = []
            for label in args.rates:
                offered = MAX_OFFERED if label == "max" else float(label)
                rates.append(await bench.at_rate(label, offered))
            # before the made-up changes: they never reach PostgreSQL, so after them the
            # index holds what the view does not
            verify = pipe.verify(settle=30)
            synthetic = [await bench.at_synthetic_rate(rate) for rate in args.synthetic_rates]
        finally:
            await bench.close()
    top = max([*rates, *synthetic], key=lambda r: r["achieved_per_s"])
    # the writer's rates carry the searchable latency; the made-up changes do not
    at_1000 = next((r for r in rates if r["offered"] == "1000"), rates[-1])
    scenario = "e2e_sustained_load"
    if (args.tick_ms, args.refresh_interval) != (1000, "1s"):  # another profile, its own file
        scenario += f"_tick{args.tick_ms}ms_refresh{args.refresh_interval}"
    return {
        "scenario": scenario,
        "events": sum(r["changes"] for r in rates),
        "seconds": round(sum(r["seconds"] for r in rates), 1),
        "events_per_s": top["achieved_per_s"],
        # the user-felt latency at 1,000 changes/s (COMMIT → _search finds it)
        "p50_ms": at_1000["searchable"]["p50_ms"],
        "p95_ms": at_1000["searchable"]["p95_ms"],
        "p99_ms": at_1000["searchable"]["p99_ms"],
        "max_rss_mb": max(
            stats["max_rss_mb"]
            for r in [*rates, *synthetic]
            for name, stats in r["processes"].items()
            if name == "producer" or name.startswith("consumer")
        ),
        "baseline": baseline,
        # the highest end-to-end rate against what the node takes from pre-encoded bulks;
        # read it with that rate's "limit": when the writer was the limit, so is this ratio
        "ratio": round(top["achieved_per_s"] / baseline["events_per_s"], 3),
        "ratio_limit": top["limit"],
        "emulator_tick_ms": args.tick_ms,
        "refresh_interval": args.refresh_interval,
        "consumers": args.consumers,
        "partitions": args.partitions,
        "orders": args.orders,
        # at 1,000 changes/s: the row's arrival at the producer → acknowledged
        "pipeline_added": at_1000["pipeline_added"],
        "verify_ok": verify["ok"],
        "cpus": os.cpu_count(),
        "rates": rates,
        "synthetic": synthetic,
        "median_searchable_p95_ms": statistics.median(
            r["searchable"]["p95_ms"] for r in rates if r["searchable"]["p95_ms"] is not None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like ^C
    result = asyncio.run(run(args))
    emit(result, args, "bench.e2e", argv or sys.argv[1:])
    return 0 if result["verify_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
