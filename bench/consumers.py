"""Benchmark: consumers draining a pre-filled backlog into OpenSearch, against the bulk helper.

    .venv/bin/python -m bench.consumers [--events N] [--counts 1,2,4] [--bulk-sizes 1000,500,2000]
                                        [--quick]  (20,000 entries, 1 and 2 consumers)

Uses the devstack's Redis and OpenSearch (``source .devstack/env``, or it reads
``.devstack/env``). It pre-fills ``--events`` changes (one realistic order each:
18 view columns + ``sync_version``, ~600 bytes of JSON; ``--changes-per-ts`` of them
share a timestamp and are grouped into entries as the producer groups them) into the
partition streams of a bench-only view, then for every consumer count (and bulk size) starts that
many ``python -m searchsync.consumer.main`` processes with a fresh consumer group and a
fresh index, and times the drain. The baseline, measured in the same run, is the raw
``_bulk`` ceiling (bench.ceiling): the same documents, ids and external versions as
pre-encoded NDJSON bodies posted with plain HTTP into a fresh index with the same
mapping. It is swept over 1–4 connections once; the best count is the ceiling, and it
is measured again right before each consumer run, because OpenSearch's speed on a
shared 2-core machine drifts between minutes: each ratio uses its own neighbour.

Latency is entry age at acknowledgement: the bench polls the ``acked:p<N>``
counters every 20 ms; entries of a partition are acknowledged in stream order, so
the k-th entry is acknowledged when the counter passes k. For the backlog the age
counts from the moment the first consumer was up (the entries were written
before). A second, live scenario writes ``--live-rate`` entries/s while consumers
run and reports the true age (ack time - XADD time).

The last line printed is one JSON object, with the fields README "Development"
lists for every bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from bench import ceiling
from bench.documents import order_document
from bench.processes import cpu_ticks, pid_file, set_affinity
from bench.profiles import top_functions
from bench.saved import common_arguments, emit, int_list
from devstack.env import require
from searchsync.common.entries import Change, encode_changes
from searchsync.common.index import ensure_index
from searchsync.common.keys import Keys
from searchsync.common.partition import partition_of
from searchsync.producer.batches import build_entries

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
POLL_S = 0.02


def service_env() -> dict[str, str]:
    try:
        return require(("REDIS_URL", "OS_HOST", "OS_PORT"))
    except RuntimeError as error:
        sys.exit(f"bench: {error}")


@dataclass
class Backlog:
    keys: Keys
    docs: list[tuple[bytes, bytes, int]] = field(default_factory=list)  # key, doc, ts
    # per partition, the XADD time (ms) of each change, in stream order
    entry_ms: list[list[int]] = field(default_factory=list)
    entries: int = 0  # stream entries written


async def prefill(redis: Redis, keys: Keys, events: int, changes_per_ts: int = 1) -> Backlog:
    """``events`` orders written as the producer lays them out: ``changes_per_ts``
    of them share a timestamp and are grouped per partition into entries of up to
    256 changes (``producer.batches.build_entries``); 1 gives one entry a change,
    the consumers' worst case."""
    rnd = random.Random(7)
    base = int(time.time() * 1000)
    per_ts = max(changes_per_ts, 1)
    backlog = Backlog(keys, entry_ms=[[] for _ in range(keys.partitions)])
    for n in range(events):
        ts = base + n // per_ts
        key, doc = order_document(n, ts, rnd)
        backlog.docs.append((key, doc, ts))
    # whole timestamps per chunk, so no timestamp's changes split across two calls
    chunk = max(5000 // per_ts, 1) * per_ts
    for start in range(0, events, chunk):
        part = backlog.docs[start : start + chunk]
        entries = build_entries(((ts, key, doc) for key, doc, ts in part), keys.partitions)
        async with redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(keys.stream(entry.partition), entry.fields)  # type: ignore[arg-type]
            ids = await pipe.execute()
        backlog.entries += len(entries)
        for entry_id, entry in zip(ids, entries, strict=True):
            # the acked:p<N> counters count changes: one XADD time per change
            xadd_ms = int(entry_id.split(b"-")[0])
            backlog.entry_ms[entry.partition].extend([xadd_ms] * entry.changes)
    async with redis.pipeline(transaction=False) as pipe:
        for partition, times in enumerate(backlog.entry_ms):
            pipe.hincrby(keys.counts(partition), keys.written_field(partition), len(times))
        await pipe.execute()
    return backlog


async def acked(redis: Redis, keys: Keys) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(keys.partitions):
            pipe.hget(keys.counts(partition), keys.acked_field(partition))
        raw: Any = await pipe.execute()
    return [int(v or 0) for v in raw]


class AckWatcher:
    """Turns the acked:p<N> counters into per-entry acknowledgement times."""

    def __init__(self, entry_ms: list[list[int]], start_counts: list[int], base: list[int]):
        self.entry_ms = entry_ms
        self.done = list(base)  # entries of each partition already accounted for
        self.start_counts = start_counts
        self.base = base
        self.ages_ms: list[float] = []
        self.first_ack = 0.0
        self.last_ack = 0.0

    def observe(self, counts: list[int], now: float, floor_ms: float | None) -> None:
        for partition, count in enumerate(counts):
            reached = self.base[partition] + count - self.start_counts[partition]
            reached = min(reached, len(self.entry_ms[partition]))
            if reached <= self.done[partition]:
                continue
            now_ms = now * 1000
            for entry in self.entry_ms[partition][self.done[partition] : reached]:
                born = entry if floor_ms is None else max(entry, floor_ms)
                self.ages_ms.append(max(now_ms - born, 0.0))
            self.done[partition] = reached
            self.first_ack = self.first_ack or now
            self.last_ack = now


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
    return 0.0


def per_doc(cpu_s: dict[str, float], docs: int) -> dict[str, float]:
    """CPU seconds → µs a document, per process."""
    return {name: round(seconds / docs * 1e6, 1) for name, seconds in cpu_s.items()}


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = service_env()
        self.tag = uuid.uuid4().hex[:8]
        self.view = f"bench_cons_{self.tag}"
        self.keys = Keys(self.view, args.partitions)
        self.redis = Redis.from_url(self.env["REDIS_URL"])
        self.search = AsyncOpenSearch(
            hosts=[{"host": self.env["OS_HOST"], "port": int(self.env["OS_PORT"])}],
            timeout=120,
            max_retries=0,
        )
        self.indices: list[str] = []
        self.base_url = f"http://{self.env['OS_HOST']}:{self.env['OS_PORT']}"
        self._bodies: dict[int, list[bytes]] = {}
        self.ceiling_connections = 2
        self.run_number = 0  # every run gets its own consumer group and index
        self.log_dir = Path(args.log_dir or f"/tmp/bench_consumers_{self.tag}")
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def service_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the devstack's OpenSearch JVM and of Redis."""
        jvm = pid_file(ROOT / ".devstack" / "opensearch" / "opensearch.pid")
        redis_pid = int((await self.redis.info("server"))["process_id"])
        return {"opensearch": cpu_seconds(jvm) if jvm else 0.0, "redis": cpu_seconds(redis_pid)}

    async def fresh_index(self, name: str) -> str:
        alias = f"{self.view}_{name}"
        await ensure_index(self.search, alias, retention_seconds=86400)
        self.indices.append(f"{alias}_v1")
        return alias

    async def drop_index(self, alias: str) -> None:
        with contextlib.suppress(Exception):
            await self.search.indices.delete(index=f"{alias}_v1")

    async def count(self, alias: str) -> int:
        await self.search.indices.refresh(index=alias)
        response = await self.search.count(index=alias)
        return int(response["count"])

    # consumers

    def spawn(
        self, name: str, group: str, alias: str, bulk: int, profile_to: Path | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.env,
            "VIEW_NAME": self.view,
            "STREAM_PARTITIONS": str(self.args.partitions),
            "CONSUMER_GROUP": group,
            "CONSUMER_NAME": name,
            "OS_INDEX_NAME": alias,
            "MAX_BATCH_SIZE": str(bulk),
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
        }
        log = (self.log_dir / f"{group}_{name}.log").open("wb")
        profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        return subprocess.Popen(
            [str(PYTHON), *profiler, "-m", "searchsync.consumer.main"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )

    async def run_consumers(
        self, backlog: Backlog, count: int, bulk: int, live: bool = False, profile: bool = False
    ) -> dict[str, Any]:
        """One drain (or, ``live``, the live writer); ``profile``: the first consumer runs
        under cProfile (slower: its figures are not comparable) and its top functions
        by own time are in ``profile_top``."""
        self.run_number += 1
        label = f"c{count}_b{bulk}{'_live' if live else ''}{'_prof' if profile else ''}"
        label += f"_r{self.run_number}"
        stats = self.log_dir / f"{label}.prof" if profile else None
        group = f"g_{label}"
        alias = await self.fresh_index(label)
        start_counts = await acked(self.redis, self.keys)
        base = [0] * self.args.partitions
        if live:  # only entries written from now on are measured
            base = [len(times) for times in backlog.entry_ms]
            for stream in self.keys.streams():
                await self.redis.xgroup_create(stream, group, id="$", mkstream=True)
        watcher = AckWatcher(backlog.entry_ms, start_counts, base)
        services_before = await self.service_cpu()
        spawned = time.monotonic()
        procs = [
            self.spawn(f"{label}-{n}", group, alias, bulk, stats if n == 0 else None)
            for n in range(count)
        ]
        ready = await self.wait_ready(spawned)
        ready_wall = time.time()
        floor_ms = None if live else ready_wall * 1000
        writer: asyncio.Task[int] | None = None
        if live:
            writer = asyncio.create_task(self.live_writer(backlog))
        total = len(backlog.docs) if not live else int(self.args.live_rate * self.args.live_seconds)
        try:
            while True:
                counts = await acked(self.redis, self.keys)
                watcher.observe(counts, time.time(), floor_ms)
                done = sum(watcher.done) - sum(base)
                if done >= total and (writer is None or writer.done()):
                    break
                if time.monotonic() - ready > self.args.max_seconds:
                    raise RuntimeError(f"{label}: only {done} of {total} acknowledged in time")
                await asyncio.sleep(POLL_S)
        finally:
            rss = [peak_rss_mb(p.pid) for p in procs]
            cpu = [cpu_seconds(p.pid) for p in procs]
            services = await self.service_cpu()
            for proc in procs:
                proc.terminate()
            codes = [proc.wait(20) for proc in procs]
        seconds = watcher.last_ack - ready_wall
        indexed = await self.count(alias)
        await self.drop_index(alias)
        result = {
            "consumers": count,
            "bulk_size": bulk,
            "events": total,
            "seconds": round(seconds, 3),
            "events_per_s": round(total / seconds, 1) if seconds > 0 else 0.0,
            "startup_s": round(ready - spawned, 3),
            "p50_ms": round(percentile(watcher.ages_ms, 0.50), 1),
            "p95_ms": round(percentile(watcher.ages_ms, 0.95), 1),
            "p99_ms": round(percentile(watcher.ages_ms, 0.99), 1),
            "max_rss_mb": round(max(rss), 1),
            "rss_mb": [round(r, 1) for r in rss],
            "consumer_cpu_s": round(sum(cpu), 2),
            # where the two cores went, per document: the consumers (their start-up
            # included), OpenSearch and Redis, from spawn to the last acknowledgement
            "cpu_us_per_doc": per_doc(
                {"consumers": sum(cpu)} | {k: services[k] - services_before[k] for k in services},
                total,
            ),
            "indexed": indexed,
            "exit_codes": codes,
        }
        if stats is not None:
            result["profile_top"] = top_functions(stats)
        self.say(f"consumers {label}: {json.dumps(result)}")
        return result

    async def wait_ready(self, spawned: float) -> float:
        """Monotonic time at which the first consumer heartbeated (was ready to read)."""
        while time.monotonic() - spawned < 60:
            if await self.redis.zcard(self.keys.members):
                return time.monotonic()
            await asyncio.sleep(0.01)
        raise RuntimeError("no consumer came up within 60 s")

    async def live_writer(self, backlog: Backlog) -> int:
        """Write --live-rate entries/s for --live-seconds, in 20 steps per second."""
        rnd = random.Random(11)
        steps = int(self.args.live_seconds * 20)
        per_step = max(int(self.args.live_rate / 20), 1)
        n = len(backlog.docs)
        start = time.monotonic()
        for step in range(steps):
            async with self.redis.pipeline(transaction=False) as pipe:
                parts = []
                for _ in range(per_step):
                    ts = int(time.time() * 1000)
                    key, doc = order_document(n, ts, rnd)
                    n += 1
                    partition = partition_of(key, self.args.partitions)
                    parts.append(partition)
                    pipe.xadd(self.keys.stream(partition), encode_changes(ts, [(key, doc)]))  # type: ignore[arg-type]
                for partition in set(parts):
                    pipe.hincrby(
                        self.keys.counts(partition),
                        self.keys.written_field(partition),
                        parts.count(partition),
                    )
                ids = await pipe.execute()
            for entry_id, partition in zip(ids, parts, strict=False):
                backlog.entry_ms[partition].append(int(entry_id.split(b"-")[0]))
            delay = start + (step + 1) / 20 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return n

    # baseline

    async def run_baseline(
        self, backlog: Backlog, bulk: int, label: str, connections: int
    ) -> dict[str, Any]:
        bodies = self.bodies(backlog, bulk)
        before = await self.service_cpu()
        run = await ceiling.measure(
            self.search, base_url=self.base_url, alias=f"{self.view}_ceiling_{label}",
            bodies=bodies, events=len(backlog.docs), connections=connections,
        )  # fmt: skip
        after = await self.service_cpu()
        spent = {"opensearch": after["opensearch"] - before["opensearch"]}
        result = {**run.as_json(), "bulk_size": bulk,
                  "cpu_us_per_doc": per_doc(spent, len(backlog.docs))}  # fmt: skip
        self.say(f"ceiling {label}: {json.dumps(result)}")
        return result

    def bodies(self, backlog: Backlog, bulk: int) -> list[bytes]:
        if bulk not in self._bodies:
            changes = [Change(ts, key, doc) for key, doc, ts in backlog.docs]
            self._bodies[bulk] = ceiling.bodies_of(changes, bulk)
        return self._bodies[bulk]

    async def warm_up(self, backlog: Backlog) -> None:
        """Index a slice once so the JVM's JIT is warm before anything is measured."""
        sample = Backlog(backlog.keys, backlog.docs[: min(30_000, len(backlog.docs))])
        changes = [Change(ts, key, doc) for key, doc, ts in sample.docs]
        await ceiling.measure(
            self.search, base_url=self.base_url, alias=f"{self.view}_warmup",
            bodies=ceiling.bodies_of(changes, 1000), events=len(changes), connections=2,
        )  # fmt: skip

    async def sweep_ceiling(self, backlog: Backlog, bulk: int) -> dict[str, Any]:
        """The raw ceiling at 1–4 connections; its best count is used from then on."""
        runs = [
            await self.run_baseline(backlog, bulk, f"sweep_c{count}", count)
            for count in self.args.ceiling_connections
        ]
        best = max(runs, key=lambda run: run["events_per_s"])
        return {"method": ceiling.METHOD, "best_connections": best["connections"], "runs": runs}

    async def cleanup(self) -> None:
        async for key in self.redis.scan_iter(match=self.keys.pattern, count=1000):
            await self.redis.delete(key)
        for index in self.indices:
            with contextlib.suppress(Exception):
                await self.search.indices.delete(index=index, params={"ignore_unavailable": "true"})
        await self.redis.aclose()
        await self.search.close()

    async def paired(self, backlog: Backlog, count: int, bulk: int) -> dict[str, Any]:
        """One consumer run and, right before it, a baseline with the same bulk size.

        The machine is shared and OpenSearch's speed drifts by tens of percent
        over minutes, so each run is compared with its own neighbour.
        """
        baseline = await self.run_baseline(
            backlog, bulk, f"c{count}_b{bulk}_r{self.run_number + 1}", self.ceiling_connections
        )
        run = await self.run_consumers(backlog, count, bulk)
        run["baseline_events_per_s"] = baseline["events_per_s"]
        run["baseline_cpu_us_per_doc"] = baseline["cpu_us_per_doc"]
        run["ratio"] = round(run["events_per_s"] / baseline["events_per_s"], 3)
        return run

    @staticmethod
    def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per (consumers, bulk size): median rate and median ratio over the repeats."""
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for run in runs:
            groups.setdefault((run["consumers"], run["bulk_size"]), []).append(run)
        return [
            {
                "consumers": count,
                "bulk_size": bulk,
                "events_per_s_median": statistics.median(r["events_per_s"] for r in group),
                "ratio_median": statistics.median(r["ratio"] for r in group),
                "ratios": [r["ratio"] for r in group],
            }
            for (count, bulk), group in sorted(groups.items())
        ]

    def best_of(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """The median-rate run (the lower one for an even count) of the fastest configuration."""
        top = max(self.summarize(runs), key=lambda c: c["events_per_s_median"])
        group = [
            r
            for r in runs
            if (r["consumers"], r["bulk_size"]) == (top["consumers"], top["bulk_size"])
        ]
        rate = statistics.median_low(r["events_per_s"] for r in group)
        return next(r for r in group if r["events_per_s"] == rate)

    async def main(self) -> dict[str, Any]:
        args = self.args
        self.say(f"prefilling {args.events} entries into {self.keys.stream(0)}…")
        t0 = time.monotonic()
        backlog = await prefill(self.redis, self.keys, args.events, args.changes_per_ts)
        mean_doc = statistics.mean(len(doc) for _, doc, _ in backlog.docs[:2000])
        self.say(f"prefilled in {time.monotonic() - t0:.1f}s, mean document {mean_doc:.0f} bytes")
        await self.warm_up(backlog)
        first_bulk = args.bulk_sizes[0]
        sweep = await self.sweep_ceiling(backlog, first_bulk)
        self.ceiling_connections = sweep["best_connections"]
        runs: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # rounds, so drift hits every count alike
            for count in args.counts:
                runs.append(await self.paired(backlog, count, first_bulk))
        best_count = self.best_of(runs)["consumers"]
        for bulk in args.bulk_sizes[1:]:
            for _ in range(args.repeat):
                runs.append(await self.paired(backlog, best_count, bulk))
        best = self.best_of(runs)
        configs = self.summarize(runs)
        live = None
        if args.live_seconds > 0:
            live = await self.run_consumers(
                backlog, best["consumers"], best["bulk_size"], live=True
            )
        profile = None
        if args.profile:
            profiled = await self.run_consumers(backlog, 1, best["bulk_size"], profile=True)
            profile = {"consumers": 1, "events_per_s": profiled["events_per_s"],
                       "top": profiled["profile_top"]}  # fmt: skip
            for entry in profile["top"]:
                self.say(f"  {entry['own_pct']:5.1f}% {entry['own_s']:7.3f}s  {entry['function']}")
        return {
            "scenario": "consumers_drain_backlog",
            "events": best["events"],
            "seconds": best["seconds"],
            "events_per_s": best["events_per_s"],
            "p50_ms": best["p50_ms"],
            "p95_ms": best["p95_ms"],
            "p99_ms": best["p99_ms"],
            "max_rss_mb": max(r["max_rss_mb"] for r in runs),
            "baseline": {
                "method": ceiling.METHOD + "; measured right before the consumers' run",
                "bulk_size": best["bulk_size"],
                "connections": self.ceiling_connections,
                "events_per_s": best["baseline_events_per_s"],
                "sweep": sweep["runs"],
            },
            "ratio": best["ratio"],
            "best_consumers": best["consumers"],
            "best_bulk_size": best["bulk_size"],
            "mean_document_bytes": round(mean_doc),
            "partitions": args.partitions,
            "changes_per_ts": args.changes_per_ts,
            "entries": backlog.entries,
            "latency_note": "entry age at acknowledgement; backlog ages count from consumer start",
            "repeat": args.repeat,
            "configs": configs,
            "runs": runs,
            "live": live,
            "profile": profile,
            "cpus": os.cpu_count(),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--partitions", type=int_list, default=[8],
        help="stream partitions; several (4,8,16) repeat everything for each",
    )  # fmt: skip
    parser.add_argument("--counts", type=int_list, default=[1, 2, 4])
    parser.add_argument(
        "--changes-per-ts", type=int, default=1000,
        help="changes sharing a timestamp, grouped into entries as the producer does "
        "(1000: 1,000 changes/s at Materialize's 1 s tick; 1: one entry a change)",
    )  # fmt: skip
    # the first size is used for every count; the others at the fastest count
    parser.add_argument("--bulk-sizes", type=int_list, default=[1000, 500, 2000])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each configuration")
    parser.add_argument("--live-rate", type=float, default=2000.0)
    parser.add_argument("--live-seconds", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--log-dir", default="")
    parser.add_argument(
        "--profile", action="store_true",
        help="after the runs, one consumer once more under cProfile: its top functions",
    )  # fmt: skip
    parser.add_argument("--ceiling-connections", type=int_list, default=[1, 2, 3, 4])
    parser.add_argument(
        "--opensearch-cpus", type=int_list, default=[],
        help="pin OpenSearch to these CPUs and everything else (consumers, Redis, the "
        "ceiling's client) to the others, as if OpenSearch had nodes of its own; saved "
        "as its own scenario",
    )  # fmt: skip
    common_arguments(parser, "a smoke run of a few seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.counts, args.bulk_sizes = 20_000, [1, 2], [1000]
        args.live_seconds, args.ceiling_connections = 3.0, [1, 2]
    return args


@contextlib.contextmanager
def placed(opensearch_cpus: set[int], redis_pid: int) -> Iterator[dict[str, list[int]]]:
    """The OpenSearch JVM (every thread) on ``opensearch_cpus``, Redis, this process and
    so every consumer it starts on the other CPUs; all of them on every CPU again after.

    OpenSearch in production runs on nodes of its own: this asks whether the consumers
    keep an OpenSearch they do not share CPUs with as busy as the raw ceiling does
    (the ceiling's client runs in this process, on the same side as the consumers).
    """
    every = set(range(os.cpu_count() or 1))
    rest = every - opensearch_cpus
    jvm = pid_file(ROOT / ".devstack" / "opensearch" / "opensearch.pid")
    if jvm is None or not opensearch_cpus or not rest or not opensearch_cpus <= every:
        raise SystemExit(f"bench: cannot place OpenSearch on {sorted(opensearch_cpus)} of "
                         f"{sorted(every)} (its pid file: {jvm})")  # fmt: skip

    set_affinity([jvm], opensearch_cpus)
    set_affinity([redis_pid], rest)
    os.sched_setaffinity(0, rest)
    try:
        yield {"opensearch": sorted(opensearch_cpus), "consumers_redis_and_client": sorted(rest)}
    finally:
        set_affinity([jvm, redis_pid], every)
        os.sched_setaffinity(0, every)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    """One run per partition count; the result of the first, with every count's best."""
    results = []
    placement: dict[str, list[int]] | None = None
    with contextlib.ExitStack() as stack:
        if args.opensearch_cpus:
            redis = Redis.from_url(service_env()["REDIS_URL"])
            redis_pid = int((await redis.info("server"))["process_id"])
            await redis.aclose()
            placement = stack.enter_context(placed(set(args.opensearch_cpus), redis_pid))
        for partitions in args.partitions:
            bench = Bench(argparse.Namespace(**{**vars(args), "partitions": partitions}))
            try:
                results.append(await bench.main())
            finally:
                await bench.cleanup()
    first = results[0]
    if placement is not None:
        first["scenario"] = "consumers_drain_backlog_opensearch_own_cpu"
        first["placement"] = placement
    if len(results) > 1:
        first["by_partitions"] = [
            {key: r[key] for key in ("partitions", "best_consumers", "events_per_s", "ratio")}
            for r in results
        ]
    return first


def main() -> None:
    args = parse_args()
    emit(asyncio.run(amain(args)), args, "bench.consumers", sys.argv[1:])


if __name__ == "__main__":
    main()
