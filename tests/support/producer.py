"""Helpers for the producer's integration and fault tests (not a test module).

Services: the shared Redis and PostgreSQL recorded in .devstack/env (or the
environment), a private redis-server when a test must restart Redis, and real
``python -m searchsync.producer.main`` processes. Everything a test creates is named after a
random view name and removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import redis
from redis.asyncio import Redis

from devstack.env import devstack_env
from searchsync.common.entries import Change, Marker, decode_entry
from searchsync.common.keys import Keys
from tests.support.services import PrivateRedis, free_port, wait_for, wait_or_dump

__all__ = [
    "REPO",
    "Entries",
    "PrivateRedis",
    "ProducerProcess",
    "Stack",
    "all_changes",
    "applied_state",
    "delete_order",
    "delete_view_keys",
    "devstack_env",
    "free_port",
    "run_producer_once",
    "seed_schema",
    "set_status",
    "start_load",
    "stream_changes",
    "unique_view",
    "view_rows",
    "wait_for",
    "xrange_all",
    "xread_new",
]

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def split_entries(entries: Entries) -> tuple[list[Change], list[Marker]]:
    """Decode stream entries (in order) into their changes and their markers."""
    changes: list[Change] = []
    markers: list[Marker] = []
    for _, fields in entries:
        decoded = decode_entry(fields)
        if isinstance(decoded, list):
            changes.extend(decoded)
        else:
            markers.append(decoded)
    return changes, markers


def xrange_all(client: redis.Redis, stream: str) -> Entries:
    """XRANGE of a whole stream, typed (redis-py's own annotation is too wide)."""
    return cast(Entries, client.xrange(stream))


def xread_new(client: redis.Redis, group: str, consumer: str, stream: str) -> Entries:
    """XREADGROUP ``>`` of one stream, typed."""
    reply = cast(
        list[tuple[bytes, Entries]],
        client.xreadgroup(group, consumer, {stream: ">"}, count=100_000),
    )
    return [entry for _, batch in reply or [] for entry in batch]


def unique_view() -> str:
    """A view name no other test uses: keys are searchsync:<view>:…"""
    return f"test_prod_{uuid.uuid4().hex[:10]}"


async def delete_view_keys(client: Redis, view: str) -> None:
    """Delete every key of ``view`` (never anything else: the Redis is shared)."""
    prefix = Keys(view, 1).prefix
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        await client.delete(key)


async def all_changes(client: Redis, keys: Keys) -> tuple[list[Change], list[Marker]]:
    """Every change and marker in every partition stream, partition by partition."""
    return split_entries(
        [entry for stream in keys.streams() for entry in cast(Entries, await client.xrange(stream))]
    )


class ProducerProcess:
    """``python -m searchsync.producer.main`` with a given environment; stderr to a file."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_dir / f"producer-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProducerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "searchsync.producer.main"],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 30, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"producer exited with {self.proc.returncode} before logging {text!r}:\n"
                    + self.log()[-4000:]
                )
            return self.log().count(text) >= count

        try:
            wait_for(seen, timeout, f"log line {text!r}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- producer log ---\n{self.log()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM and the exit status; AssertionError with the log and every thread's
        stack (SIGUSR1, see producer.main) if it has not exited within ``timeout``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return wait_or_dump(self.proc, timeout, self.log)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()


def run_producer_once(
    env: Mapping[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the producer to completion (e.g. a configuration error) and capture its output."""
    return subprocess.run(
        [str(PYTHON), "-m", "searchsync.producer.main"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Stack:
    """A private FreshMart schema, emulator and Redis, and producers pointed at them."""

    VIEW = "orders_search_source_mv"

    def __init__(
        self,
        *,
        orders: int = 5,
        partitions: int = 4,
        realistic: bool = False,
        emulator_env: Mapping[str, str] | None = None,
    ) -> None:
        """``realistic`` seeds with devstack's generator (couriers, statuses, …) so the
        load generator has everything to act on; else tests.support.mzemu's small seed."""
        from tests.support.mzemu import create_schema, start_emulator

        self.partitions = partitions
        self.keys = Keys(self.VIEW, partitions)
        self.log_dir = Path(tempfile.mkdtemp(prefix="producer-test-"))
        self.schema = seed_schema(orders) if realistic else create_schema(orders=orders)
        self.redis = PrivateRedis()
        self.redis.start()
        self.emulator = start_emulator(self.schema, tick_ms=25, retain_ms=600_000, env=emulator_env)
        self.producers: list[ProducerProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        """Producer settings for this stack; fast retries and progress for tests."""
        env = {
            "MZ_HOST": self.emulator.host,
            "MZ_PORT": str(self.emulator.port),
            "MZ_SSLMODE": "disable",  # the emulator speaks plain text unless given a cert
            "REDIS_URL": self.redis.url,
            "STREAM_PARTITIONS": str(self.partitions),
            "VIEW_NAME": self.VIEW,
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
            "PROGRESS_INTERVAL_MS": "100",
            "RETRY_INITIAL_BACKOFF": "0.2",
            "RETRY_MAX_BACKOFF": "1",
            "BUFFER_LOG_SECONDS": "1",
            "BACKPRESSURE_THRESHOLD": "1000000",
            "BACKPRESSURE_RESUME": "1000",
            "METRICS_PORT": "0",
            # a restarted producer waits for the killed one's lease to expire
            "LEASE_TTL_SECONDS": "1",
        }
        env.update(overrides)
        return env

    def producer(self, **overrides: str) -> ProducerProcess:
        process = ProducerProcess(self.env(**overrides), self.log_dir).start()
        self.producers.append(process)
        return process

    def pg(self) -> Any:
        return self.emulator.pg()

    def sync_redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port)

    def close(self) -> None:
        from tests.support.mzemu import drop_schema

        for process in self.producers:
            process.close()
        self.emulator.stop()
        self.emulator.log_path.unlink(missing_ok=True)
        self.redis.close()
        drop_schema(self.schema)
        shutil.rmtree(self.log_dir, ignore_errors=True)


def seed_schema(orders: int) -> str:
    """A new schema ``test_prod_<hex>`` seeded by devstack.freshmart.seed."""
    import datetime as dt

    import psycopg

    from devstack.freshmart.seed import seed_database
    from tests.support.mzemu import pg_dsn

    schema = f"test_prod_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        seed_database(conn, orders=orders, seed=7, as_of=dt.datetime.now(dt.UTC), schema=schema)
    return schema


def start_load(
    stack: Stack, *, rate: float, seconds: float, seed: int = 3
) -> subprocess.Popen[bytes]:
    """The FreshMart load generator against the stack's schema, as a process."""
    from tests.support.mzemu import pg_dsn

    return subprocess.Popen(
        [
            str(PYTHON), "-m", "devstack.freshmart.load",
            "--rate", str(rate), "--seconds", str(seconds), "--seed", str(seed),
            "--schema", stack.schema, "--dsn", pg_dsn(),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def stream_changes(client: redis.Redis, keys: Keys) -> tuple[list[Change], list[Marker]]:
    """Every change and marker in the partition streams (sync client)."""
    return split_entries(
        [entry for stream in keys.streams() for entry in xrange_all(client, stream)]
    )


def applied_state(changes: list[Change]) -> dict[bytes, dict[str, Any]]:
    """What an index would hold after applying ``changes`` with external versions."""
    state: dict[bytes, tuple[int, dict[str, Any] | None]] = {}
    for change in changes:
        current = state.get(change.key)
        if current is not None and current[0] > change.ts:
            continue
        state[change.key] = (change.ts, None if change.doc is None else json.loads(change.doc))
    return {key: doc for key, (_, doc) in state.items() if doc is not None}


def view_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    """The view as PostgreSQL computes it now: order_id → row as a dict."""
    with stack.pg() as pg:
        cursor = pg.execute(f"SELECT * FROM {Stack.VIEW}")
        names = [column.name for column in cursor.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def set_status(stack: Stack, order: str, status: str) -> None:
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "UPDATE triples SET object_value = %s, updated_at = now() "
            "WHERE subject_id = %s AND predicate = 'order_status'",
            (status, order),
        )


def delete_order(stack: Stack, number: str) -> None:
    """Delete every triple of order ``FM-<number>`` (order, lines, task)."""
    order = f"order:FM-{number}"
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "DELETE FROM triples WHERE subject_id = %s OR subject_id IN "
            "(SELECT subject_id FROM triples WHERE object_value = %s "
            "AND predicate IN ('line_of_order', 'task_of_order'))",
            (order, order),
        )
