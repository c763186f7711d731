"""Benchmark: rows/s the Materialize emulator streams to one psycopg client.

    .venv/bin/python -m bench.mzemu [--orders 200000] [--batch 10000]

Uses the devstack PostgreSQL (``.devstack/env``). It builds a private FreshMart
schema with ``--orders`` orders (13 triples each, generated in SQL), starts a
private emulator over it (which loads the whole view once, like Materialize
hydrating), and then streams the snapshot — a backlog of ``--orders`` rows of the
view's 18 columns, already arranged in the emulator's memory — to one psycopg 3
client, in these forms:

* ``fetch_all_<mode>``  ``BEGIN; DECLARE c CURSOR FOR SUBSCRIBE v; FETCH ALL c``
* ``fetch_batch_fetchall`` ``FETCH <batch> c`` until the backlog is drained (the
  per-FETCH latencies give p50/p95/p99)
* ``copy``              ``COPY (SUBSCRIBE v) TO STDOUT``, rows read with ``copy.read()``

where ``<mode>`` is how the client consumes a result: ``count`` (rows as libpq
received and parsed them, no Python objects), ``fetchall`` (``fetchall()`` with
text loaders for every column) or ``typed`` (``fetchall()`` with psycopg's
default Decimal/datetime loaders). Each form is timed from the statement to the
last row. The baselines, measured in the same run against PostgreSQL itself, read
the same rows (materialised into a table, so PostgreSQL does no view work) with the
same client code: ``SELECT *`` in each mode (``postgres_select_<mode>``) and ``COPY
… TO STDOUT`` (``postgres_copy``). Client-side conversion costs the same on both
sides and, with 18 columns, caps any psycopg client at roughly 150k rows/s on this
machine, which is why ``count`` is the primary measure of what the server streams.

The last line printed is one JSON object, with the fields README "Development"
lists for every bench; ``events_per_s`` is the primary form, ``fetch_all_count``
(FETCH is what the producer uses), ``ratio`` is ours over PostgreSQL's ``SELECT``
counted the same way,
``copy_ratio`` compares the COPY forms, and ``faster_form`` names the quicker of
FETCH ALL and COPY.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.freshmart.schema import (  # noqa: E402
    apply_schema,
    create_secondary_indexes,
    drop_secondary_indexes,
)
from devstack.harness.mzemu import Emulator, pg_dsn, start_emulator  # noqa: E402

VIEW = "orders_search_source_mv"
_TEXT_OIDS = (16, 20, 21, 23, 1082, 1114, 1184, 1700, 16552)

_SEED = """
INSERT INTO triples (subject_id, predicate, object_value, object_type)
SELECT 'customer:C-' || c, p.predicate, p.value, 'string'
FROM generate_series(1, %(customers)s) AS c,
LATERAL (VALUES
    ('customer_name', 'Customer Number ' || c),
    ('customer_email', 'customer.' || c || '@example.com'),
    ('customer_address', c || ' Long Street Name Avenue, Springfield, 12345')
) AS p(predicate, value);

INSERT INTO triples (subject_id, predicate, object_value, object_type)
SELECT 'store:S-' || s, p.predicate, p.value, 'string'
FROM generate_series(1, 50) AS s,
LATERAL (VALUES
    ('store_name', 'FreshMart Store ' || s),
    ('store_zone', (ARRAY['north', 'south', 'east', 'west', 'central'])[1 + s %% 5]),
    ('store_address', s || ' Market Square')
) AS p(predicate, value);

INSERT INTO triples (subject_id, predicate, object_value, object_type)
SELECT p.subject, p.predicate, p.value, p.kind
FROM generate_series(1, %(orders)s) AS n,
LATERAL (VALUES
    ('order:FM-' || n, 'order_number', 'FM-' || n, 'string'),
    ('order:FM-' || n, 'order_status', 'placed', 'string'),
    ('order:FM-' || n, 'order_store', 'store:S-' || (1 + n %% 50), 'entity_ref'),
    ('order:FM-' || n, 'placed_by', 'customer:C-' || (1 + n %% %(customers)s), 'entity_ref'),
    ('order:FM-' || n, 'delivery_window_start', '2026-01-01T10:00:00+00:00', 'timestamp'),
    ('order:FM-' || n, 'delivery_window_end', '2026-01-01T11:00:00+00:00', 'timestamp'),
    ('orderline:FM-' || n || '-1', 'line_of_order', 'order:FM-' || n, 'entity_ref'),
    ('orderline:FM-' || n || '-1', 'quantity', (1 + n %% 5)::text, 'int'),
    ('orderline:FM-' || n || '-1', 'order_line_unit_price', '3.49', 'decimal'),
    ('task:T-FM-' || n, 'task_of_order', 'order:FM-' || n, 'entity_ref'),
    ('task:T-FM-' || n, 'assigned_to', 'courier:K-' || (1 + n %% 500), 'entity_ref'),
    ('task:T-FM-' || n, 'task_status', 'assigned', 'string'),
    ('task:T-FM-' || n, 'eta', '2026-01-01T10:30:00+00:00', 'timestamp')
) AS p(subject, predicate, value, kind);
"""


def log(message: str) -> None:
    print(f"[bench.mzemu] {message}", file=sys.stderr, flush=True)


def seed(schema: str, orders: int) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        apply_schema(conn, schema)
        with conn.transaction():
            drop_secondary_indexes(conn, schema)
            conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
            params = {"orders": orders, "customers": max(1, orders // 5)}
            for statement in _SEED.split(";\n\n"):
                conn.execute(statement.encode(), params)
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            create_secondary_indexes(conn, schema)
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, "triples")))
        conn.execute(
            sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                sql.Identifier(schema, "bench_rows"), sql.Identifier(schema, VIEW)
            )
        )


def text_loaders(conn: psycopg.Connection[Any]) -> None:
    for oid in _TEXT_OIDS:
        conn.adapters.register_loader(oid, TextLoader)


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


def _consume(cur: psycopg.Cursor[Any], mode: str) -> int:
    """Rows of the current result: ``count`` leaves them as libpq parsed them,
    ``fetchall`` also builds Python rows (text values, or typed with ``typed``)."""
    if mode == "count":
        return cur.rowcount
    return len(cur.fetchall())


def fetch_all(emu: Emulator, mode: str) -> tuple[int, float]:
    with emu.connect() as conn:
        if mode != "typed":
            text_loaders(conn)
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")

        def run() -> int:
            cur.execute("FETCH ALL c")
            return _consume(cur, mode)

        result = timed(run)
        conn.rollback()
    return result


def fetch_batches(emu: Emulator, total: int, batch: int) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    with emu.connect() as conn:
        text_loaders(conn)
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")

        def run() -> int:
            got = 0
            while got < total:
                start = time.perf_counter()
                cur.execute(f"FETCH {batch} c")
                got += len(cur.fetchall())
                latencies.append((time.perf_counter() - start) * 1000)
            return got

        n, seconds = timed(run)
        conn.rollback()
    return n, seconds, latencies


def copy_rows(conn: psycopg.Connection[Any], statement: str, total: int) -> tuple[int, float]:
    """Read ``total`` COPY rows (one CopyData each), then cancel a COPY that keeps going."""

    class _Done(Exception):
        pass

    got = 0
    start = time.perf_counter()
    seconds = 0.0
    with conn.cursor() as cur, contextlib.suppress(_Done), cur.copy(statement) as copy:
        while copy.read():
            got += 1
            if got >= total:
                seconds = time.perf_counter() - start
                raise _Done
    return got, seconds or time.perf_counter() - start


def baseline_select(schema: str, mode: str) -> tuple[int, float]:
    with psycopg.connect(pg_dsn()) as conn:
        if mode != "typed":
            text_loaders(conn)
        cur = conn.cursor()
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, "bench_rows"))

        def run() -> int:
            cur.execute(query)
            return _consume(cur, mode)

        return timed(run)


def max_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def private_schema(orders: int) -> Iterator[str]:
    schema = f"bench_mz_{os.getpid()}"
    try:
        started = time.perf_counter()
        seed(schema, orders)
        log(f"seeded {orders} orders into {schema} in {time.perf_counter() - started:.1f}s")
        yield schema
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000, help="backlog rows (default 200000)")
    parser.add_argument("--batch", type=int, default=10_000, help="FETCH count of fetch_batch")
    args = parser.parse_args(argv)
    with private_schema(args.orders) as schema:
        started = time.perf_counter()
        emu = start_emulator(
            schema,
            tick_ms=1000,
            retain_ms=60_000,
            env={"MZEMU_MAX_BUFFERED_BYTES": str(8 << 30), "MZEMU_LOG_LEVEL": "WARNING"},
            timeout=600,
        )
        log(f"emulator loaded the view in {time.perf_counter() - started:.1f}s")
        try:
            forms: dict[str, dict[str, float]] = {}

            def record(name: str, rows: int, seconds: float) -> None:
                forms[name] = {"rows": rows, "seconds": round(seconds, 3),
                               "rows_per_s": round(rows / seconds)}  # fmt: skip
                log(f"{name}: {rows} rows in {seconds:.2f}s = {rows / seconds:,.0f} rows/s")

            for mode in ("count", "fetchall", "typed"):
                record(f"postgres_select_{mode}", *baseline_select(schema, mode))
                record(f"fetch_all_{mode}", *fetch_all(emu, mode))
            rows_b, seconds_b, latencies = fetch_batches(emu, args.orders, args.batch)
            record("fetch_batch_fetchall", rows_b, seconds_b)
            with psycopg.connect(pg_dsn()) as pg:
                copy_base = copy_rows(pg, f"COPY {schema}.bench_rows TO STDOUT", args.orders)
            record("postgres_copy", *copy_base)
            with emu.connect(autocommit=True) as conn:
                copy_ours = copy_rows(conn, f"COPY (SUBSCRIBE {VIEW}) TO STDOUT", args.orders)
            record("copy", *copy_ours)
            rss = max_rss_mb(emu.process.pid)
        finally:
            emu.close()
    ours = ("fetch_all_count", "copy")
    faster = max(ours, key=lambda name: forms[name]["rows_per_s"])
    primary, base = forms["fetch_all_count"], forms["postgres_select_count"]
    result = {
        "scenario": "mzemu_stream_backlog",
        "events": primary["rows"],
        "seconds": primary["seconds"],
        "events_per_s": primary["rows_per_s"],
        "measures": "FETCH ALL c of the snapshot backlog; rows counted as libpq received them",
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_of": f"one FETCH {args.batch} c (rows converted to Python text)",
        "max_rss_mb": round(rss, 1),
        "max_rss_of": "the emulator process",
        "baseline": {
            "what": "psycopg SELECT * of the same rows from a PostgreSQL table, "
            "counted the same way",
            "events": base["rows"],
            "seconds": base["seconds"],
            "events_per_s": base["rows_per_s"],
        },
        "ratio": round(primary["rows_per_s"] / base["rows_per_s"], 3),
        "faster_form": faster,
        "copy_ratio": round(forms["copy"]["rows_per_s"] / forms["postgres_copy"]["rows_per_s"], 3),
        "fetchall_ratio": round(
            forms["fetch_all_fetchall"]["rows_per_s"]
            / forms["postgres_select_fetchall"]["rows_per_s"],
            3,
        ),
        "forms": forms,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
