"""Benchmark: the backlog drain against consumers, Redis masters (1 vs 3) and OpenSearch
nodes (1 vs 3), with the raw ``_bulk`` ceiling of each OpenSearch topology and the CPU
that every figure cost.

    .venv/bin/python -m bench.scale [--events N] [--counts 1,2,4,6] [--quick] [--save]

Every service here is private and started by this bench on free loopback ports (the
devstack's Redis and OpenSearch are not touched; its jars, Java and redis-server are
used): Redis as one plain ``redis-server`` or a Redis Cluster of three masters
(devstack.harness.cluster_redis, no replicas: a replica only adds a copy, no write
capacity), OpenSearch as one node or a cluster of three (each a JVM with
``--heap``). Under one OpenSearch topology every Redis topology is up at once and drains
its own copy of the backlog exactly as bench.consumers does (its Bench: prefill, fresh
consumer group and index per run, acked counters polled), the Redis topologies taking
turns at each consumer count (the order flips between counts), so OpenSearch's drift
over minutes hits both alike;
the consumers reach OpenSearch round-robin over its nodes (consumer i talks to node
i mod n, as a load balancer would spread them). An index on one node has 1 shard and
no replica (the project's default); on three nodes 3 shards and 1 replica, what a
cluster is run with (so every document is indexed twice there).

The ceiling (bench.ceiling: pre-encoded bodies, plain HTTP) is swept over 1–4
connections once per OpenSearch topology (the best count is used from then on) and
measured again right before each drain, with the same shard and replica counts. Redis
memory an entry: INFO used_memory over the nodes before and after the prefill.

Next to every figure: the box's CPU utilisation over the drain (all cores, from
/proc/stat: 100 % is both cores busy) and the CPU seconds of the consumers, the Redis
nodes and the OpenSearch JVMs (bench.processes' counters), and the load average at the
start and end. On a 2-core box more nodes are more processes on the same two cores:
a 3-node figure here shows the cost of the topology, not the capacity that three
machines would add. The JSON says so in ``note``.

``--quick``: Redis 1 vs 3 masters and one OpenSearch node, 5,000 entries, 1 and 2
consumers (a smoke run of about a minute; a JVM start dominates).

The last line printed is one JSON object (README "Development" lists the fields).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as sync_redis
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench import ceiling
from bench.consumers import PYTHON, Backlog, Bench, cpu_seconds, prefill
from bench.saved import common_arguments, emit, int_list
from devstack.harness.cluster_redis import three_node_cluster
from devstack.harness.opensearch_node import OpenSearchNode
from devstack.harness.services import PrivateRedis
from searchsync.common.entries import Change
from searchsync.common.index import index_body
from searchsync.common.keys import Keys

__all__ = ["box_busy", "main"]

NOTE = (
    "2-core box: every Redis node, OpenSearch JVM and consumer of a topology shares the "
    "same 2 cores, so 3 nodes here measure what the topology costs, not the capacity 3 "
    "machines would add; read each rate next to its CPU columns"
)


def box_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all cores from the text of /proc/stat's ``cpu`` line."""
    fields = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def box_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Percent of all cores busy between two :func:`box_ticks` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100.0 * busy / total, 1) if total > 0 else 0.0


def _read_box() -> tuple[int, int]:
    return box_ticks(Path("/proc/stat").read_text())


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class ClusterNode(OpenSearchNode):
    """A node of a private multi-node cluster: OpenSearchNode's JVM with zen discovery."""

    def __init__(self, directory: Path, *, heap: str, cluster_name: str, number: int) -> None:
        super().__init__(directory, heap=heap, cluster_name=cluster_name)
        self.number = number
        self.peers: list[ClusterNode] = []

    def command(self) -> list[str]:
        base = [
            arg
            for arg in super().command()
            if arg != "discovery.type=single-node" and not arg.startswith("node.name=")
        ]
        seeds = ",".join(f"127.0.0.1:{peer.transport_port}" for peer in self.peers)
        managers = ",".join(f"{self.cluster_name}-{peer.number}" for peer in self.peers)
        return [
            *base,
            f"node.name={self.cluster_name}-{self.number}",
            "discovery.type=zen",
            f"discovery.seed_hosts={seeds}",
            f"cluster.initial_cluster_manager_nodes={managers}",
        ]


def wait_green(node: OpenSearchNode, nodes: int, timeout: float) -> None:
    """Until ``node`` sees a green cluster of ``nodes`` nodes; RuntimeError after ``timeout``."""
    import urllib.request

    url = f"{node.url}/_cluster/health?wait_for_nodes={nodes}&wait_for_status=green&timeout=2s"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.loads(reply.read())
            if body.get("status") == "green" and body.get("number_of_nodes") == nodes:
                return
        time.sleep(0.5)
    raise RuntimeError(f"no green cluster of {nodes} nodes after {timeout}s:\n{node.log_tail()}")


@contextlib.contextmanager
def opensearch_topology(count: int, heap: str, timeout: float) -> Iterator[list[OpenSearchNode]]:
    """``count`` private nodes (1: single-node discovery), healthy before this yields."""
    root = Path(tempfile.mkdtemp(prefix="bench-scale-os-"))
    nodes: list[OpenSearchNode] = []
    try:
        if count == 1:
            nodes = [OpenSearchNode(root / "n1", heap=heap)]
        else:
            name = f"bench-scale-{uuid.uuid4().hex[:6]}"
            members = [
                ClusterNode(root / f"n{i}", heap=heap, cluster_name=name, number=i)
                for i in range(1, count + 1)
            ]
            for member in members:
                member.peers = members
            nodes = list(members)
        for node in nodes:
            node.start()
        if count == 1:
            nodes[0].wait_healthy(timeout)
        else:
            wait_green(nodes[0], count, timeout)
        yield nodes
    finally:
        for node in nodes:
            node.close()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisTopology:
    masters: int
    url: str
    pids: list[int]
    ports: list[int]

    def used_memory(self) -> int:
        """Bytes of data memory (INFO used_memory) over every node."""
        total = 0
        for port in self.ports:
            with sync_redis.Redis(port=port) as node:
                total += int(node.info("memory")["used_memory"])
        return total

    def client(self) -> Redis:
        if self.masters == 1:
            return Redis.from_url(self.url)
        # typed as Redis, as common.redis_client returns it: the commands used are shared
        cluster: Any = RedisCluster.from_url(self.url)
        return cluster  # type: ignore[no-any-return]


@contextlib.contextmanager
def redis_topology(masters: int) -> Iterator[RedisTopology]:
    """One plain redis-server (AOF, fsync every second), or three cluster masters."""
    if masters == 1:
        server = PrivateRedis()
        server.start()
        try:
            assert server.proc is not None
            yield RedisTopology(1, server.url, [server.proc.pid], [server.port])
        finally:
            server.close()
        return
    with three_node_cluster() as nodes:
        pids = [node.proc.pid for node in nodes if node.proc is not None]
        yield RedisTopology(3, nodes[0].url, pids, [node.port for node in nodes])


class TopologyBench(Bench):
    """bench.consumers' drain against private nodes; CPU of exactly those processes."""

    def __init__(
        self,
        args: argparse.Namespace,
        redis: RedisTopology,
        search_nodes: list[OpenSearchNode],
    ) -> None:
        self.args = args
        self.tag = uuid.uuid4().hex[:8]
        self.view = f"bench_scale_{self.tag}"
        self.keys = Keys(self.view, args.partitions)
        self.topology = redis
        self.search_nodes = search_nodes
        first = search_nodes[0]
        self.env = {
            "REDIS_URL": redis.url,
            "REDIS_CLUSTER": "true" if redis.masters > 1 else "false",
            "OS_HOST": first.host,
            "OS_PORT": str(first.port),
        }
        self.redis = redis.client()
        self.search = AsyncOpenSearch(
            hosts=[{"host": node.host, "port": node.port} for node in search_nodes],
            timeout=120,
            max_retries=0,
        )
        self.indices = []
        self.base_url = first.url
        self._bodies = {}
        self.ceiling_connections = 2
        self.run_number = 0
        self.log_dir = Path(args.log_dir or f"/tmp/bench_scale_{self.tag}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.consumer_number = 0
        # one node: the project's default; three: what a cluster is run with
        self.shards, self.replicas = (1, 0) if len(search_nodes) == 1 else (3, 1)

    async def service_cpu(self) -> dict[str, float]:
        return {
            "opensearch": sum(
                cpu_seconds(node.proc.pid) for node in self.search_nodes if node.proc is not None
            ),
            "redis": sum(cpu_seconds(pid) for pid in self.topology.pids),
        }

    async def fresh_index(self, name: str) -> str:
        alias = f"{self.view}_{name}"
        await self.create_index(alias)
        self.indices.append(f"{alias}_v1")
        return alias

    async def create_index(self, alias: str) -> None:
        body = index_body(retention_seconds=86_400, shards=self.shards, replicas=self.replicas)
        marked = {alias: {"is_write_index": True}}
        await self.search.indices.create(index=f"{alias}_v1", body={**body, "aliases": marked})
        await self.search.cluster.health(index=f"{alias}_v1", wait_for_status="green")

    def spawn(
        self, name: str, group: str, alias: str, bulk: int, profile_to: Path | None = None
    ) -> Any:
        """bench.consumers' consumer, pointed at the next OpenSearch node in turn."""
        node = self.search_nodes[self.consumer_number % len(self.search_nodes)]
        self.consumer_number += 1
        saved = self.env
        self.env = {**saved, "OS_HOST": node.host, "OS_PORT": str(node.port)}
        try:
            return super().spawn(name, group, alias, bulk, profile_to)
        finally:
            self.env = saved

    async def run_consumers(
        self, backlog: Backlog, count: int, bulk: int, live: bool = False, profile: bool = False
    ) -> dict[str, Any]:
        self.consumer_number = 0
        load_before, box_before = _load(), _read_box()
        result = await super().run_consumers(backlog, count, bulk, live, profile)
        result["box_cpu_busy_pct"] = box_busy(box_before, _read_box())
        result["load_average"] = {"start": load_before, "end": _load()}
        result["cpu_s"] = {
            name: round(us * result["events"] / 1e6, 2)
            for name, us in result["cpu_us_per_doc"].items()
        }
        return result

    async def run_baseline(
        self, backlog: Backlog, bulk: int, label: str, connections: int
    ) -> dict[str, Any]:
        await self.create_index(f"{self.view}_ceiling_{label}")  # measure() reuses the alias
        box_before = _read_box()
        result = await super().run_baseline(backlog, bulk, label, connections)
        result["box_cpu_busy_pct"] = box_busy(box_before, _read_box())
        return result

    async def cleanup(self) -> None:
        await self.redis.aclose()
        await self.search.close()

    async def warm_up(self, backlog: Backlog) -> None:
        """An unmeasured ceiling pass so each JVM's JIT is warm (as bench.consumers)."""
        sample = backlog.docs[: min(20_000, len(backlog.docs))]
        changes = [Change(ts, key, doc) for key, doc, ts in sample]
        alias = f"{self.view}_warmup"
        await self.create_index(alias)
        await ceiling.measure(
            self.search, base_url=self.base_url, alias=alias,
            bodies=ceiling.bodies_of(changes, 1000), events=len(changes), connections=2,
        )  # fmt: skip


def _row(
    redis_masters: int, os_nodes: int, run: dict[str, Any], ceiling_rate: float
) -> dict[str, Any]:
    return {
        "redis_masters": redis_masters,
        "opensearch_nodes": os_nodes,
        "consumers": run["consumers"],
        "events_per_s": run["events_per_s"],
        "ceiling_events_per_s": run["baseline_events_per_s"],
        "ceiling_best_of_sweep": ceiling_rate,
        "ratio": run["ratio"],
        "box_cpu_busy_pct": run["box_cpu_busy_pct"],
        "cpu_s": run["cpu_s"],
        "cpu_us_per_doc": run["cpu_us_per_doc"],
        "p95_ms": run["p95_ms"],
        "load_average": run["load_average"],
    }


async def drain_interleaved(
    args: argparse.Namespace, redis_topologies: list[RedisTopology], nodes: list[OpenSearchNode]
) -> list[dict[str, Any]]:
    """Prefill every Redis topology, sweep the ceiling of this OpenSearch topology once,
    then for each consumer count drain every Redis topology in turn (the order flips from
    one count to the next), each drain right after a ceiling run of its own: OpenSearch's
    speed drifts over minutes on a shared box, so neighbours are compared."""
    benches = [TopologyBench(args, redis, nodes) for redis in redis_topologies]
    try:
        backlogs, facts = [], []
        for bench, redis in zip(benches, redis_topologies, strict=True):
            memory_before = redis.used_memory()
            backlog = await prefill(bench.redis, bench.keys, args.events)
            # what an entry costs in Redis (stream node + listpack entry) beside its document
            entry_bytes = (redis.used_memory() - memory_before) / args.events
            backlogs.append(backlog)
            facts.append({
                "redis_masters": redis.masters, "opensearch_nodes": len(nodes),
                "shards": bench.shards, "replicas": bench.replicas,
                "mean_document_bytes": round(statistics.mean(len(d) for _, d, _ in backlog.docs)),
                "redis_bytes_per_entry": round(entry_bytes),
            })  # fmt: skip
        first = benches[0]
        await first.warm_up(backlogs[0])
        sweep = await first.sweep_ceiling(backlogs[0], args.bulk)
        runs: list[list[dict[str, Any]]] = [[] for _ in benches]
        for turn, count in enumerate(args.counts):
            order = list(range(len(benches)))
            for index in order if turn % 2 == 0 else order[::-1]:
                benches[index].ceiling_connections = sweep["best_connections"]
                say(f"redis {redis_topologies[index].masters} master(s), {count} consumer(s)")
                runs[index].append(await benches[index].paired(backlogs[index], count, args.bulk))
    finally:
        for bench in benches:
            await bench.cleanup()
    for index, fact in enumerate(facts):
        fact["ceiling"] = sweep
        fact["runs"] = sorted(runs[index], key=lambda run: int(run["consumers"]))
    return facts


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    if not PYTHON.exists():
        sys.exit(f"bench: {PYTHON} is missing (the project's virtualenv)")
    started, load_start = time.monotonic(), _load()
    box_start = _read_box()
    topologies: list[dict[str, Any]] = []
    for os_count in args.opensearch_nodes:
        t0 = time.monotonic()
        with opensearch_topology(os_count, args.heap, args.start_timeout) as nodes:
            say(f"opensearch: {os_count} node(s) up in {time.monotonic() - t0:.0f}s")
            wanted = [
                masters
                for masters in args.redis_masters
                # 3 + 3 adds no comparison the other pairs lack
                if os_count == 1 or masters == 1 or args.full_matrix
            ]
            with contextlib.ExitStack() as stack:
                redis = [stack.enter_context(redis_topology(masters)) for masters in wanted]
                say(f"draining: redis {wanted} master(s), opensearch {os_count} node(s)")
                topologies += await drain_interleaved(args, redis, nodes)
    rows = [
        _row(
            t["redis_masters"],
            t["opensearch_nodes"],
            run,
            max(r["events_per_s"] for r in t["ceiling"]["runs"]),
        )
        for t in topologies
        for run in t["runs"]
    ]
    best = max(rows, key=lambda row: row["events_per_s"])
    return {
        "scenario": "scale_topologies",
        "events": args.events,
        "seconds": round(args.events / best["events_per_s"], 3),
        "events_per_s": best["events_per_s"],
        "baseline": {
            "method": ceiling.METHOD + "; per OpenSearch topology, right before each drain",
            "events_per_s": best["ceiling_events_per_s"],
        },
        "ratio": best["ratio"],
        "mean_document_bytes": topologies[0]["mean_document_bytes"],
        "best": {k: best[k] for k in ("redis_masters", "opensearch_nodes", "consumers")},
        "note": NOTE,
        "cpus": os.cpu_count(),
        "partitions": args.partitions,
        "bulk_size": args.bulk,
        "heap": args.heap,
        "load_average": {"start": load_start, "end": _load()},
        "box_cpu_busy_pct": box_busy(box_start, _read_box()),
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
        "topologies": topologies,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--counts", type=int_list, default=[1, 2, 4, 6])
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--redis-masters", type=int_list, default=[1, 3])
    parser.add_argument("--opensearch-nodes", type=int_list, default=[1, 3])
    parser.add_argument(
        "--full-matrix", action="store_true",
        help="also 3 Redis masters with 3 OpenSearch nodes",
    )  # fmt: skip
    parser.add_argument("--heap", default="512m", help="each OpenSearch JVM's heap")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--ceiling-connections", type=int_list, default=[1, 2, 3, 4])
    parser.add_argument("--log-dir", default="")
    common_arguments(parser, "Redis 1 vs 3 masters on one OpenSearch node, 5,000 entries")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.counts, args.opensearch_nodes = 5_000, [1, 2], [1]
        args.ceiling_connections = [1, 2]
    return args


def main() -> None:
    args = parse_args()
    emit(asyncio.run(amain(args)), args, "bench.scale", sys.argv[1:])


if __name__ == "__main__":
    main()
