"""FreshMart schema, seeder and load generator against the real PostgreSQL.

Needs the devstack PostgreSQL (``devstack/up``; DATABASE_URL or .devstack/env).
Every test works in its own schema ``test_fm_<hex>`` (schema applied, a few
orders seeded) and drops it at the end.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack.freshmart.changes import DELETE_AFTER_CHANGES
from devstack.freshmart.load import ChangeKind, apply_change, customer_with_orders, load_state
from devstack.freshmart.schema import apply_schema
from devstack.freshmart.seed import seed_database
from tests.support.mzemu import pg_dsn

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ORDERS = 40
VIEW_TYPES = {
    "order_id": "text",
    "order_number": "text",
    "order_status": "text",
    "store_id": "text",
    "customer_id": "text",
    "delivery_window_start": "timestamp with time zone",
    "delivery_window_end": "timestamp with time zone",
    "order_total_amount": "numeric(10,2)",
    "customer_name": "text",
    "customer_email": "text",
    "customer_address": "text",
    "store_name": "text",
    "store_zone": "text",
    "store_address": "text",
    "assigned_courier_id": "text",
    "delivery_task_status": "text",
    "delivery_eta": "timestamp with time zone",
    "effective_updated_at": "timestamp with time zone",
}

Conn = psycopg.Connection[tuple[Any, ...]]


def _new_schema(conn: Conn) -> str:
    schema = f"test_fm_{secrets.token_hex(6)}"
    apply_schema(conn, schema)
    return schema


def _drop(conn: Conn, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _use(conn: Conn, schema: str) -> None:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


@pytest.fixture
def conn() -> Iterator[Conn]:
    with psycopg.connect(pg_dsn(), autocommit=True) as c:
        yield c


@pytest.fixture
def schema(conn: Conn) -> Iterator[str]:
    """A private schema with the FreshMart DDL and ORDERS seeded orders; search_path set."""
    name = _new_schema(conn)
    try:
        seed_database(conn, orders=ORDERS, seed=7, as_of=AS_OF, schema=name)
        _use(conn, name)
        yield name
    finally:
        _drop(conn, name)


def _view(conn: Conn) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute("SELECT * FROM orders_search_source_mv").fetchall()
    view = {row[0]: tuple(row) for row in rows}
    assert len(view) == len(rows), "one row per order in seeded data (one task each)"
    return view


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _triples(conn: Conn) -> list[tuple[str, str, str | None, str]]:
    return conn.execute(
        "SELECT subject_id, predicate, object_value, object_type FROM triples ORDER BY id"
    ).fetchall()


def test_apply_schema_is_idempotent_and_keeps_the_search_path(conn: Conn) -> None:
    conn.execute("SET search_path TO pg_catalog")
    name = _new_schema(conn)
    try:
        apply_schema(conn, name)  # second time: no error, nothing duplicated
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 'triples'",
            (name,),
        ).fetchone()
        assert indexes == (3,)  # primary key + the two secondary indexes
    finally:
        _drop(conn, name)


def test_apply_schema_converts_a_table_from_before_the_collation_choice(conn: Conn) -> None:
    name = f"test_fm_{secrets.token_hex(6)}"
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        _use(conn, name)
        conn.execute(
            "CREATE TABLE triples (id bigserial PRIMARY KEY, subject_id text NOT NULL,"
            " predicate text NOT NULL, object_value text, object_type text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type)"
            " VALUES ('order:FM-1', 'order_number', 'FM-1', 'string')"
        )
        conn.execute("CREATE VIEW orders_search_source_mv AS SELECT subject_id FROM triples")
        apply_schema(conn, name)
        collations = conn.execute(
            "SELECT attname, attcollation::regcollation::text FROM pg_attribute"
            " WHERE attrelid = 'triples'::regclass AND attname IN"
            " ('subject_id', 'predicate', 'object_value') ORDER BY attnum"
        ).fetchall()
        assert collations == [("subject_id", '"C"'), ("predicate", '"C"'), ("object_value", '"C"')]
        row = conn.execute("SELECT order_id, order_total_amount FROM orders_search_source_mv")
        assert row.fetchall() == [("order:FM-1", Decimal("0.00"))]
    finally:
        _drop(conn, name)


def test_view_has_the_runbook_columns_and_types(conn: Conn, schema: str) -> None:
    cur = conn.execute("SELECT * FROM orders_search_source_mv LIMIT 1")
    assert cur.description is not None
    assert [c.name for c in cur.description] == list(VIEW_TYPES)
    declared = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'orders_search_source_mv'::regclass AND attnum > 0 ORDER BY attnum"
    ).fetchall()
    assert declared == list(VIEW_TYPES.items())
    typeof = ", ".join(f"pg_typeof({c})::text" for c in VIEW_TYPES)
    row = conn.execute(
        f"SELECT {typeof} FROM orders_search_source_mv WHERE delivery_eta IS NOT NULL LIMIT 1"
    ).fetchone()
    assert row is not None
    assert list(row) == [t.split("(")[0] for t in VIEW_TYPES.values()]
    values = cur.fetchone()
    assert values is not None and isinstance(values[7], Decimal)
    assert isinstance(values[5], datetime) and values[5].tzinfo is not None


def test_total_is_the_sum_of_quantity_times_unit_price(conn: Conn, schema: str) -> None:
    facts: dict[str, dict[str, str | None]] = defaultdict(dict)
    for subject, predicate, value, _ in _triples(conn):
        facts[subject][predicate] = value
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for f in facts.values():
        if "line_of_order" in f:
            expected[str(f["line_of_order"])] += int(str(f["quantity"])) * Decimal(
                str(f["order_line_unit_price"])
            )
    view = _view(conn)
    assert len(view) == ORDERS
    for oid, row in view.items():
        assert row[7] == expected[oid] > 0
        order = facts[oid]
        customer, store = facts[str(order["placed_by"])], facts[str(order["order_store"])]
        assert row[1:5] == (
            order["order_number"],
            order["order_status"],
            order["order_store"],
            order["placed_by"],
        )
        assert row[8:11] == (
            customer["customer_name"],
            customer["customer_email"],
            customer["customer_address"],
        )
        assert row[11:14] == (store["store_name"], store["store_zone"], store["store_address"])


def test_an_order_without_lines_totals_zero_and_two_tasks_give_two_rows(
    conn: Conn, schema: str
) -> None:
    rows = [
        ("order:FM-9", "order_number", "FM-9", "string"),
        ("order:FM-9", "order_status", "placed", "string"),
        ("order:FM-9", "order_store", "store:S-1", "entity_ref"),
        ("order:FM-9", "placed_by", "customer:C-1", "entity_ref"),
        ("order:FM-9", "delivery_window_start", "2025-03-15T10:00:00+00:00", "timestamp"),
        ("order:FM-9", "delivery_window_end", "2025-03-15T11:00:00+00:00", "timestamp"),
    ]
    insert = (
        "INSERT INTO triples (subject_id, predicate, object_value, object_type)"
        " VALUES (%s, %s, %s, %s)"
    )
    with conn.cursor() as cur:
        cur.executemany(insert, rows)
    query = "SELECT order_total_amount, delivery_task_status FROM orders_search_source_mv"
    where = " WHERE order_id = 'order:FM-9' ORDER BY 2"
    assert conn.execute(query + where).fetchall() == [(Decimal("0.00"), None)]
    with conn.cursor() as cur:
        cur.executemany(
            insert,
            [
                ("task:T-FM-9", "task_of_order", "order:FM-9", "entity_ref"),
                ("task:T-FM-9", "task_status", "pending", "string"),
                ("task:T-FM-9-b", "task_of_order", "order:FM-9", "entity_ref"),
                ("task:T-FM-9-b", "task_status", "assigned", "string"),
            ],
        )
    assert conn.execute(query + where).fetchall() == [
        (Decimal("0.00"), "assigned"),
        (Decimal("0.00"), "pending"),
    ]


def test_effective_updated_at_is_the_latest_write_of_order_customer_store_task(
    conn: Conn, schema: str
) -> None:
    oid = "order:FM-1010"
    (customer,) = conn.execute(
        "SELECT object_value FROM triples WHERE subject_id = %s AND predicate = 'placed_by'",
        (oid,),
    ).fetchone() or ("",)
    before = conn.execute(
        "SELECT effective_updated_at FROM orders_search_source_mv WHERE order_id = %s", (oid,)
    ).fetchone()
    with conn.transaction():  # a writer's update: delete + insert in one transaction
        conn.execute(
            "DELETE FROM triples WHERE subject_id = %s AND predicate = 'customer_name'",
            (customer,),
        )
        conn.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type)"
            " VALUES (%s, 'customer_name', 'Renamed Customer', 'string')",
            (customer,),
        )
        written = conn.execute("SELECT now()").fetchone()
    after = conn.execute(
        "SELECT effective_updated_at, customer_name FROM orders_search_source_mv"
        " WHERE order_id = %s",
        (oid,),
    ).fetchone()
    assert before is not None and after is not None and written is not None
    assert after == (written[0], "Renamed Customer")
    assert after[0] > before[0]


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_each_change_kind_alters_exactly_its_view_rows(
    conn: Conn, schema: str, kind: ChangeKind
) -> None:
    state = load_state(conn)
    rng = random.Random(11)
    if kind == ChangeKind.DELETION:
        # delete an order the generator itself cancelled, DELETE_AFTER_CHANGES changes ago
        for oid in [o for o, s in state.orders.items() if s.status == "cancelled"]:
            state.remove_order(oid)
        cancelled = apply_change(conn, ChangeKind.CANCELLATION, rng, state)
        for _ in range(DELETE_AFTER_CHANGES):
            apply_change(conn, ChangeKind.ETA_UPDATE, rng, state)
    before = _view(conn)
    t0 = time.time()
    record = apply_change(conn, kind, rng, state)
    after = _view(conn)
    assert record.kind == kind and t0 <= record.sent_ts <= record.commit_ts <= time.time()
    assert _changed(before, after) == set(record.order_ids)
    assert record.deleted == (kind == ChangeKind.DELETION)
    if kind == ChangeKind.DELETION:
        assert record.order_ids == cancelled.order_ids
        (oid,) = record.order_ids
        assert oid not in after
        left = conn.execute(
            "SELECT count(*) FROM triples WHERE subject_id = %s OR object_value = %s", (oid, oid)
        ).fetchone()
        assert left == (0,)
    elif kind == ChangeKind.NEW_ORDER:
        (oid,) = record.order_ids
        assert oid not in before and after[oid][2] == "placed" and after[oid][15] == "pending"
    elif kind == ChangeKind.ADDRESS_EDIT:
        (customer,) = {after[o][4] for o in record.order_ids}
        placed = conn.execute(
            "SELECT subject_id FROM triples WHERE predicate = 'placed_by' AND object_value = %s",
            (customer,),
        ).fetchall()
        assert {r[0] for r in placed} == set(record.order_ids)
        assert len(record.order_ids) >= 2
    elif kind == ChangeKind.CANCELLATION:
        (oid,) = record.order_ids
        assert after[oid][2] == "cancelled" and after[oid][15] == "cancelled"


def test_address_edit_of_a_chosen_customer_changes_all_and_only_their_orders(
    conn: Conn, schema: str
) -> None:
    state = load_state(conn)
    rng = random.Random(3)
    customer = customer_with_orders(state, rng, min_orders=3)
    before = _view(conn)
    with conn.transaction():
        conn.execute(
            "DELETE FROM triples WHERE subject_id = %s AND predicate = 'customer_address'",
            (customer,),
        )
        conn.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type)"
            " VALUES (%s, 'customer_address', '1 New Rd, Midtown, IL 60601', 'string')",
            (customer,),
        )
    changed = _changed(before, _view(conn))
    assert changed == set(state.orders_of_customer[customer])
    assert len(changed) >= 3


def test_keyed_lookup_filters_at_the_anchor_scan(conn: Conn, schema: str) -> None:
    # The key predicate must reach the scan that finds orders: then a lookup of k
    # keys reads k orders' triples, not every order's.
    plan = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM orders_search_source_mv"
        " WHERE order_id = ANY(%s)",
        (["order:FM-1001", "order:FM-1002"],),
    ).fetchone()
    assert plan is not None

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    anchors = [n for n in nodes(plan[0][0]["Plan"]) if n.get("Alias") == "anchor"]
    assert len(anchors) == 1
    assert anchors[0]["Actual Rows"] * anchors[0]["Actual Loops"] == 2


def test_seeding_is_deterministic_for_a_seed(conn: Conn) -> None:
    names = [_new_schema(conn) for _ in range(3)]
    try:
        seed_database(conn, orders=30, seed=5, as_of=AS_OF, schema=names[0])
        cli = subprocess.run(
            [
                str(ROOT / "devstack" / "seed"),
                "--orders=30",
                "--seed=5",
                f"--schema={names[1]}",
                f"--as-of={AS_OF.isoformat()}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "DATABASE_URL": pg_dsn()},
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert "seeded 30 orders" in cli.stdout
        seed_database(conn, orders=30, seed=6, as_of=AS_OF, schema=names[2])
        data = []
        for name in names:
            _use(conn, name)
            data.append(_triples(conn))
        assert data[0] == data[1]
        assert data[0] != data[2]
        # a second seed into the same schema is refused unless asked to truncate
        with pytest.raises(ValueError, match="not empty"):
            seed_database(conn, orders=30, seed=5, as_of=AS_OF, schema=names[0])
        seed_database(conn, orders=30, seed=5, as_of=AS_OF, schema=names[0], truncate=True)
        _use(conn, names[0])
        assert _triples(conn) == data[1]
    finally:
        for name in names:
            _drop(conn, name)


def test_load_cli_records_every_committed_change(conn: Conn, schema: str, tmp_path: Path) -> None:
    record = tmp_path / "changes.jsonl"
    started = time.time()
    cli = subprocess.run(
        [
            str(ROOT / "devstack" / "load"),
            "--rate=40",
            "--seconds=1",
            "--seed=2",
            f"--schema={schema}",
            f"--record={record}",
            "--connections=2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": pg_dsn()},
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert f"wrote {len(lines)} changes" in cli.stdout
    assert 10 <= len(lines) <= 41
    view = _view(conn)
    for line in lines:
        assert set(line) == {"kind", "order_ids", "commit_ts", "deleted", "sent_ts"}
        assert line["kind"] in set(ChangeKind)
        assert started <= line["sent_ts"] <= line["commit_ts"] <= time.time()
        if line["deleted"]:
            assert not set(line["order_ids"]) & view.keys()
