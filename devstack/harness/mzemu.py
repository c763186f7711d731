"""Private Materialize emulators over private FreshMart schemas, for tests and benches.

Needs the devstack PostgreSQL (``.devstack/env``). Each emulator is its own
process on its own port (MZEMU_PORT=0, the port is read from its log) serving its
own schema ``test_mz_<hex>``, so a caller may use short ticks, long retention, small
buffers, drop the view or kill the process without disturbing anyone. The pytest
fixtures over these are in ``tests/support/mzemu.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.env import require
from devstack.freshmart.schema import apply_schema
from devstack.harness.services import stop_gracefully

__all__ = [
    "Emulator",
    "create_schema",
    "drop_schema",
    "pg_dsn",
    "seed_orders",
    "start_emulator",
]

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"mzemu listening on [^:]+:(\d+)")


def pg_dsn() -> str:
    """DSN of the devstack PostgreSQL (DATABASE_URL from the environment or .devstack/env).

    Raises RuntimeError when neither has it: a test needing PostgreSQL fails, never skips.
    """
    return require(["DATABASE_URL"])["DATABASE_URL"]


def create_schema(orders: int = 3) -> str:
    """A new schema with the FreshMart triples, view, and ``orders`` seeded orders."""
    schema = f"test_mz_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        apply_schema(conn, schema)
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        seed_orders(conn, orders)
    return schema


def drop_schema(schema: str) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def seed_orders(conn: psycopg.Connection[object], orders: int, first: int = 1001) -> None:
    """Insert ``orders`` orders (numbers ``FM-<first>``…) into the connection's schema.

    Customers ``C-1``/``C-2`` alternate (so C-1 has every other order), stores
    ``S-1``/``S-2`` likewise; each order has two lines and one task.
    """
    rows: list[tuple[str, str, str, str]] = []
    for customer in (1, 2):
        cid = f"customer:C-{customer}"
        rows += [
            (cid, "customer_name", f"Customer {customer}", "string"),
            (cid, "customer_email", f"c{customer}@example.com", "string"),
            (cid, "customer_address", f"{customer} Main St", "string"),
        ]
    for store in (1, 2):
        sid = f"store:S-{store}"
        rows += [
            (sid, "store_name", f"Store {store}", "string"),
            (sid, "store_zone", "north" if store == 1 else "south", "string"),
            (sid, "store_address", f"{store} Market Sq", "string"),
        ]
    for n in range(first, first + orders):
        number = f"FM-{n}"
        oid = f"order:{number}"
        customer = 1 + (n - first) % 2
        rows += [
            (oid, "order_number", number, "string"),
            (oid, "order_status", "placed", "string"),
            (oid, "order_store", f"store:S-{customer}", "entity_ref"),
            (oid, "placed_by", f"customer:C-{customer}", "entity_ref"),
            (oid, "delivery_window_start", "2026-01-01T10:00:00+00:00", "timestamp"),
            (oid, "delivery_window_end", "2026-01-01T11:00:00+00:00", "timestamp"),
        ]
        for line in (1, 2):
            lid = f"orderline:{number}-{line}"
            rows += [
                (lid, "line_of_order", oid, "entity_ref"),
                (lid, "line_product", f"product {line}", "string"),
                (lid, "quantity", str(line), "int"),
                (lid, "order_line_unit_price", "2.50", "decimal"),
            ]
        tid = f"task:T-{number}"
        rows += [
            (tid, "task_of_order", oid, "entity_ref"),
            (tid, "task_status", "pending", "string"),
        ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, %s)",
            rows,
        )


@dataclass
class Emulator:
    """A running private emulator process."""

    schema: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} user=materialize password=materialize "
            "dbname=materialize connect_timeout=10"
        )

    def connect(self, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        """A psycopg connection to the emulator."""
        return psycopg.connect(self.dsn, autocommit=autocommit)

    def pg(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to PostgreSQL with search_path = the schema."""
        conn = psycopg.connect(pg_dsn(), autocommit=True)
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.schema)))
        return conn

    def admin(self, call: str) -> int:
        """Run an admin function (e.g. ``mzemu_tick()``) and return its result."""
        with self.connect(autocommit=True) as conn:
            row = conn.execute(f"SELECT {call}").fetchone()
        assert row is not None
        return int(str(row[0]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            stop_gracefully(self.process, 10, self.kill)

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def close(self) -> None:
        """:meth:`stop`, then remove the log file."""
        self.stop()
        self.log_path.unlink(missing_ok=True)


def start_emulator(
    schema: str,
    *,
    tick_ms: int = 25,
    retain_ms: int = 600_000,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Emulator:
    """Start ``python -m devstack.mzemu`` on a free port serving ``schema``.

    Returns once it listens. Raises RuntimeError (with its log) if it exits or does
    not listen within ``timeout`` seconds.
    """
    fd, name = tempfile.mkstemp(prefix="mzemu-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    child_env = {
        **os.environ,
        "MZEMU_PORT": "0",
        "MZEMU_HOST": "127.0.0.1",
        "MZEMU_PG_DSN": pg_dsn(),
        "MZEMU_PG_SCHEMA": schema,
        "MZEMU_TICK_MS": str(tick_ms),
        "MZEMU_RETAIN_MS": str(retain_ms),
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.mzemu"],
            cwd=ROOT,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = _LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            return Emulator(schema, "127.0.0.1", int(m.group(1)), process, log_path, child_env)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        process.kill()
    raise RuntimeError(f"emulator did not start:\n{log_path.read_text(errors='replace')}")
