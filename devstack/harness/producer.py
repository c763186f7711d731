"""The producer as a process, and a private producer stack, for tests and benches.

:class:`Stack`: a private FreshMart schema in the devstack PostgreSQL, a private
emulator over it and a private redis-server, and ``python -m
searchsync.producer.main`` processes pointed at them (:class:`ProducerProcess`);
:func:`start_load` runs the FreshMart load generator against its schema.
Everything is named at random and removed by :meth:`Stack.close`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis

from devstack.freshmart.seed import seed_database
from devstack.harness.mzemu import create_schema, drop_schema, pg_dsn, start_emulator
from devstack.harness.services import PrivateRedis, wait_for, wait_or_dump
from searchsync.common.keys import Keys

__all__ = ["PYTHON", "REPO", "ProducerProcess", "Stack", "seed_schema", "start_load"]

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


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
        emulator_timeout: float = 30.0,
    ) -> None:
        """``realistic`` seeds with devstack's generator (couriers, statuses, …) so the
        load generator has everything to act on; else devstack.harness.mzemu's small seed.
        ``emulator_timeout``: seconds the emulator may take to load the view and listen."""
        self.partitions = partitions
        self.keys = Keys(self.VIEW, partitions)
        self.log_dir = Path(tempfile.mkdtemp(prefix="producer-test-"))
        self.schema = seed_schema(orders) if realistic else create_schema(orders=orders)
        self.redis = PrivateRedis()
        self.redis.start()
        self.emulator = start_emulator(
            self.schema, tick_ms=25, retain_ms=600_000, env=emulator_env, timeout=emulator_timeout
        )
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
        for process in self.producers:
            process.close()
        self.emulator.stop()
        self.emulator.log_path.unlink(missing_ok=True)
        self.redis.close()
        drop_schema(self.schema)
        shutil.rmtree(self.log_dir, ignore_errors=True)


def seed_schema(orders: int) -> str:
    """A new schema ``test_prod_<hex>`` seeded by devstack.freshmart.seed."""
    schema = f"test_prod_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        seed_database(conn, orders=orders, seed=7, as_of=dt.datetime.now(dt.UTC), schema=schema)
    return schema


def start_load(
    stack: Stack, *, rate: float, seconds: float, seed: int = 3
) -> subprocess.Popen[bytes]:
    """The FreshMart load generator against the stack's schema, as a process."""
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
