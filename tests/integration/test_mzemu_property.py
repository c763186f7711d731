"""Property: replaying any emitted diff stream onto its snapshot gives the view.

For random sequences of FreshMart writes (status changes, address edits, deleted
and added orders, orders with two tasks, quantity edits, moved orders), the rows a
SUBSCRIBE emits, accumulated up to a closed timestamp ``t``, equal ``SELECT * FROM
orders_search_source_mv`` as PostgreSQL answered it at ``t``.

Services: the devstack PostgreSQL; one private emulator for the module.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.string import TextLoader

from tests.support.mzemu import Emulator, create_schema, drop_schema, start_emulator

VIEW = "orders_search_source_mv"
_TEXT_OIDS = (16, 20, 21, 23, 1082, 1114, 1184, 1700, 16552)
_numbers = itertools.count(5000)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    schema = create_schema(orders=6)
    emu = start_emulator(schema)
    try:
        yield emu
    finally:
        emu.close()
        drop_schema(schema)


def _text_everything(conn: psycopg.Connection[Any]) -> None:
    for oid in _TEXT_OIDS:
        conn.adapters.register_loader(oid, TextLoader)


def _orders(pg: psycopg.Connection[Any]) -> list[str]:
    rows = pg.execute(
        "SELECT DISTINCT subject_id FROM triples WHERE predicate = 'order_number' ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _replace(pg: psycopg.Connection[Any], subject: str, predicate: str, value: str) -> None:
    with pg.transaction():
        pg.execute(
            "DELETE FROM triples WHERE subject_id = %s AND predicate = %s", (subject, predicate)
        )
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, 'string')",
            (subject, predicate, value),
        )


def _apply(pg: psycopg.Connection[Any], op: tuple[Any, ...]) -> None:
    orders = _orders(pg)
    kind = op[0]
    if kind == "add":
        number = f"FM-{next(_numbers)}"
        oid = f"order:{number}"
        rows = [
            (oid, "order_number", number),
            (oid, "order_status", "placed"),
            (oid, "placed_by", f"customer:C-{op[1]}"),
            (oid, "order_store", f"store:S-{op[1]}"),
            (f"orderline:{number}-1", "line_of_order", oid),
            (f"orderline:{number}-1", "quantity", "3"),
            (f"orderline:{number}-1", "order_line_unit_price", "1.25"),
        ]
        rows += [(f"task:T{t}-{number}", "task_of_order", oid) for t in range(op[2])]
        with pg.cursor() as cur:
            cur.executemany(
                "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
                "VALUES (%s, %s, %s, 'string')",
                rows,
            )
        return
    if kind == "address":
        _replace(pg, f"customer:C-{op[1]}", "customer_address", op[2])
        return
    if kind == "store":
        _replace(pg, f"store:S-{op[1]}", "store_name", op[2])
        return
    if not orders:
        return
    order = orders[op[1] % len(orders)]
    number = order.split(":", 1)[1]
    if kind == "status":
        _replace(pg, order, "order_status", op[2])
    elif kind == "delete":
        pg.execute("DELETE FROM triples WHERE subject_id = %s", (order,))
    elif kind == "move":
        _replace(pg, order, "placed_by", f"customer:C-{op[2]}")
    elif kind == "quantity":
        pg.execute(
            "UPDATE triples SET object_value = %s WHERE subject_id LIKE %s "
            "AND predicate = 'quantity'",
            (str(op[2]), f"orderline:{number}-%"),
        )
    elif kind == "task":
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, 'task_of_order', %s, 'entity_ref')",
            (f"task:T{op[2]}-{number}", order),
        )


_ops = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 2), st.integers(0, 2)),
    st.tuples(
        st.just("address"), st.integers(1, 2), st.sampled_from(["1 A St", "2 B Rd", "é\t\\"])
    ),
    st.tuples(st.just("store"), st.integers(1, 2), st.sampled_from(["North", "Süd"])),
    st.tuples(st.just("status"), st.integers(0, 50), st.sampled_from(["placed", "picking"])),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("move"), st.integers(0, 50), st.integers(1, 2)),
    st.tuples(st.just("quantity"), st.integers(0, 50), st.integers(1, 9)),
    st.tuples(st.just("task"), st.integers(0, 50), st.integers(2, 4)),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_ops, min_size=1, max_size=4), min_size=1, max_size=4))
def test_replayed_diffs_equal_the_view_at_every_closed_timestamp(
    emulator: Emulator, batches: list[list[tuple[Any, ...]]]
) -> None:
    with emulator.pg() as pg, emulator.connect() as conn:
        pg.execute("SET TimeZone = 'UTC'")
        _text_everything(pg)
        _text_everything(conn)
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
        cur.execute("FETCH ALL c WITH (timeout = '0s')")  # starts it: as_of is now
        rows: list[tuple[Any, ...]] = list(cur.fetchall())
        expected: dict[int, Counter[tuple[Any, ...]]] = {}
        for batch in batches:
            for op in batch:
                _apply(pg, op)
            ts = emulator.admin("mzemu_tick()")
            expected[ts] = Counter(tuple(r) for r in pg.execute(f"SELECT * FROM {VIEW}"))
        last = max(expected)
        deadline = time.monotonic() + 20
        while max((int(r[0]) for r in rows if r[1] == "t"), default=0) <= last:
            assert time.monotonic() < deadline
            cur.execute("FETCH ALL c WITH (timeout = '50ms')")
            rows.extend(cur.fetchall())
        conn.rollback()
    as_of = int(rows[0][0])
    assert rows[0][1] == "t"
    for ts, want in expected.items():
        assert ts > as_of
        state: Counter[tuple[Any, ...]] = Counter()
        for r in rows:
            if r[1] == "f" and as_of <= int(r[0]) <= ts:
                diff = int(r[2])
                assert diff != 0
                state[tuple(r[3:])] += diff
        assert +state == want, f"state at {ts} differs"
        assert all(v >= 0 for v in state.values())
    times = [int(r[0]) for r in rows]
    assert times == sorted(times), "timestamps never decrease"
