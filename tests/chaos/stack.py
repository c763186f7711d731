"""Everything one chaos run starts, and stops again: services, searchsync processes, load.

Services, all private to the run: a PostgreSQL schema ``chaos_<hex>`` on the devstack
PostgreSQL seeded by devstack's FreshMart seeder, an emulator over it
(tests.support.mzemu), a redis-server with ``appendfsync always`` (tests.support.
processes.DurableRedis), an OpenSearch node (tests.support.opensearch_node) and,
in front of it, the HTTP proxy that can answer 401 (tests.support.http_proxy).
Consumers reach OpenSearch only through the proxy; the operator CLI
(``searchsync verify``, ``index create``) talks to the node directly.

Processes: two producers (``producer-a`` and ``producer-b``, PRODUCER_NAME set; one
is the active one, the other the hot standby), consumers ``consumer-<n>``
(CONSUMER_NAME set), the FreshMart load generator. Their logs are files in the run
directory, one per name, appended to on every restart.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.chaos.timeline import Timeline
from tests.support.http_proxy import HttpProxy
from tests.support.mzemu import Emulator, pg_dsn, start_emulator
from tests.support.opensearch_node import OpenSearchNode
from tests.support.processes import PYTHON, ROOT, DurableRedis, ManagedProcess, kill_children

__all__ = ["ALIAS", "PARTITIONS", "VIEW", "ChaosStack"]

# `searchsync` is the console script for cli.main:main; run as a module from ROOT so
# the CLI is always the code of this tree (the console script imports whichever tree
# the virtualenv was installed from)
CLI = (str(PYTHON), "-m", "searchsync")
VIEW = "orders_search_source_mv"
ALIAS = "orders"
PARTITIONS = 8
TICK_MS = 100

# The short timings of the brief: leases move in 2 s, retries start at 0.2 s and cap at
# 2 s, every partition gets a progress entry every 200 ms.
TIMINGS = {
    "STREAM_PARTITIONS": str(PARTITIONS),
    "LEASE_TTL_SECONDS": "2",
    "RETRY_INITIAL_BACKOFF": "0.2",
    "RETRY_MAX_BACKOFF": "2",
    "PROGRESS_INTERVAL_MS": "200",
    "MAX_DELIVERIES": "5",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "INFO",
    "BUFFER_LOG_SECONDS": "5",
    "METRICS_PORT": "0",
}


def _ignore(step: str, action: Callable[[], object], say: Callable[[str], None]) -> None:
    """Run one teardown step; a failure is reported and the next step still runs."""
    try:
        action()
    except Exception as error:
        say(f"teardown: {step} failed: {error!r}")


class ChaosStack:
    def __init__(self, run_dir: Path, timeline: Timeline, *, orders: int, seed: int) -> None:
        self.run_dir = run_dir
        self.timeline = timeline
        self.orders = orders
        self.seed = seed
        self.schema = f"chaos_{uuid.uuid4().hex[:10]}"
        self.schema_created = False
        self.redis = DurableRedis(run_dir / "redis")
        self.node: OpenSearchNode | None = None
        self.proxy: HttpProxy | None = None
        self.emulator: Emulator | None = None
        self.producers: dict[str, ManagedProcess] = {}
        self.consumers: dict[str, ManagedProcess] = {}
        self.load: ManagedProcess | None = None
        self.active_producer = "producer-a"  # what the run believes; see faults.active_producer

    # -- services

    def start_services(self, retain_ms: int) -> None:
        """Node (started first: it takes longest), schema, Redis, emulator, proxy, index."""
        say = self.timeline.say
        self.node = OpenSearchNode(self.run_dir / "opensearch", heap="512m")
        self.node.start()
        say(f"OpenSearch node starting on :{self.node.port} (log {self.node.log_path})")
        self._seed_schema()
        self.redis.start()
        say(f"redis-server on :{self.redis.port} (appendfsync always, {self.redis.directory})")
        self.emulator = start_emulator(self.schema, tick_ms=TICK_MS, retain_ms=retain_ms)
        say(f"emulator on :{self.emulator.port} over {self.schema} (tick {TICK_MS} ms)")
        took = self.node.wait_healthy()
        say(f"OpenSearch node healthy after {took:.1f}s more")
        self.proxy = HttpProxy(self.node.host, self.node.port)
        self.proxy.start()
        say(f"HTTP proxy :{self.proxy.port} -> :{self.node.port}")
        created = self.cli("index", "create", "--json")
        if created.returncode != 0:
            raise RuntimeError(f"searchsync index create failed: {created.stderr}")
        say(f"index: {created.stdout.strip()}")

    def _seed_schema(self) -> None:
        log = self.run_dir / "seed.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [str(PYTHON), "-m", "devstack.freshmart.seed",
                 "--orders", str(self.orders), "--seed", str(self.seed),
                 "--schema", self.schema, "--dsn", pg_dsn()],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False,
            )  # fmt: skip
        self.schema_created = True  # even a failed seed may have created it
        if result.returncode != 0:
            raise RuntimeError(f"seeding failed: {log.read_text(errors='replace')[-2000:]}")
        self.timeline.say(f"seeded {self.orders} orders into {self.schema} ({log})")

    # -- environments

    def _base_env(self) -> dict[str, str]:
        assert self.emulator is not None and self.proxy is not None
        return {
            **TIMINGS,
            "MZ_HOST": self.emulator.host,
            "MZ_PORT": str(self.emulator.port),
            "MZ_SSLMODE": "disable",  # the emulator speaks plain text
            "REDIS_URL": self.redis.url,
            "VIEW_NAME": VIEW,
            "OS_HOST": "127.0.0.1",
            "OS_PORT": str(self.proxy.port),
            "OS_INDEX_NAME": ALIAS,
        }

    def operator_env(self) -> dict[str, str]:
        """The CLI's environment: OpenSearch directly, not through the proxy."""
        assert self.node is not None
        return {**self._base_env(), "OS_HOST": self.node.host, "OS_PORT": str(self.node.port)}

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            cwd=ROOT,
            env={**os.environ, **self.operator_env()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any] | None:
        """``searchsync status --json``; None when it cannot answer (Redis down)."""
        try:
            result = self.cli("status", "--json", timeout=30)
        except subprocess.TimeoutExpired:
            return None
        if result.returncode != 0:
            return None
        try:
            report: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return None
        return report

    # -- searchsync processes

    def start_producer(self, name: str) -> ManagedProcess:
        process = self.producers.get(name)
        if process is None:
            env = {**self._base_env(), "PRODUCER_NAME": name}
            process = ManagedProcess(
                name, "searchsync.producer.main", env, self.run_dir / f"{name}.log"
            )
            self.producers[name] = process
        process.start()
        return process

    def start_consumer(self, name: str) -> ManagedProcess:
        process = self.consumers.get(name)
        if process is None:
            env = {**self._base_env(), "CONSUMER_NAME": name}
            process = ManagedProcess(
                name, "searchsync.consumer.main", env, self.run_dir / f"{name}.log"
            )
            self.consumers[name] = process
        process.start()
        return process

    def live_consumers(self) -> list[str]:
        return sorted((n for n, p in self.consumers.items() if p.alive()), key=_number)

    def free_consumer_name(self) -> str:
        """The lowest ``consumer-<n>`` not running now (a stopped replica's name is reused,
        as supervisord's process_num is)."""
        n = 1
        while f"consumer-{n}" in self.consumers and self.consumers[f"consumer-{n}"].alive():
            n += 1
        return f"consumer-{n}"

    # -- load

    def start_load(self, rate: float, seconds: float, seed: int) -> ManagedProcess:
        args = [
            "--rate", f"{rate:g}", "--seconds", f"{seconds:g}", "--seed", str(seed),
            "--schema", self.schema, "--dsn", pg_dsn(),
        ]  # fmt: skip
        self.load = ManagedProcess(
            "load", "devstack.freshmart.load", {}, self.run_dir / "load.log", args
        )
        self.load.start()
        return self.load

    # -- teardown

    def close(self) -> None:
        """Stop everything this stack started, in dependency order; never raises."""
        say = self.timeline.say
        if self.load is not None:
            _ignore("load", functools.partial(self.load.stop, 10), say)
        processes = [*self.consumers.values(), *self.producers.values()]
        for process in processes:
            process.terminate()  # all at once: a graceful stop takes seconds each
        for process in processes:
            _ignore(process.name, functools.partial(process.stop, 15), say)
        if self.proxy is not None:
            _ignore("proxy", self.proxy.close, say)
        if self.node is not None:
            _ignore("opensearch", self.node.stop, say)
        if self.emulator is not None:
            _ignore("emulator", self._close_emulator, say)
        _ignore("redis", self.redis.shutdown, say)
        if self.schema_created:
            _ignore("schema", self._drop_schema, say)
        leaked = kill_children()
        if leaked:
            say(f"teardown: killed leftover child processes {leaked}")

    def _close_emulator(self) -> None:
        assert self.emulator is not None
        self.emulator.stop()
        with contextlib.suppress(OSError):
            shutil.copyfile(self.emulator.log_path, self.run_dir / "emulator.log")
            self.emulator.log_path.unlink()

    def _drop_schema(self) -> None:
        # the emulator held an advisory lock and triggers on it; it is stopped by now
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def _number(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
