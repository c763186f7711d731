"""producer/results.py against a real FETCH: the rows a ResultRows gives, and the
documents the C path writes from libpq's text, are what psycopg's fetchall and the
Python encoder give for the same result (the unit tests build results by hand;
here psycopg's loaders and the emulator's texts are the real ones).

Services: the devstack PostgreSQL (a private FreshMart schema of 150 orders) and a
private emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.producer import native
from searchsync.producer.consolidate import Consolidator
from searchsync.producer.documents import register_text_loaders
from searchsync.producer.results import ResultRows
from searchsync.producer.rows import FIRST_VALUE, Rejected
from searchsync.producer.subscribe import Subscription, connection_class
from tests.support.mzemu import Emulator, seeded_emulator

ORDERS = 150
VIEW = "orders_search_source_mv"

pytestmark = pytest.mark.skipif(native.speedups is None, reason="the C path is not built")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with seeded_emulator(ORDERS, tick_ms=100) as emu:
        yield emu


async def subscription(emu: Emulator) -> Subscription:
    conn = await connection_class().connect(emu.dsn, autocommit=True)
    register_text_loaders(conn.adapters)
    sub = Subscription(conn, view=VIEW, envelope="diffs", key_column="order_id")
    await sub.declare(as_of=None, snapshot=True)
    return sub


async def test_a_snapshot_fetch_comes_as_result_rows_equal_to_fetchall(emulator: Emulator) -> None:
    sub = await subscription(emulator)
    try:
        consolidator = Consolidator(snapshot=True)
        snapshot: dict[str, Any] = {}
        loaded: dict[str, tuple[Any, ...]] = {}
        kinds = set()
        while not snapshot or len(snapshot) < ORDERS:
            rows = await sub.fetch()
            kinds.add(type(rows))
            layout, encoder = sub.layout, sub.encoder
            assert layout is not None and encoder is not None
            as_tuples = list(rows)  # psycopg's loaders, row by row
            if isinstance(rows, ResultRows):
                assert rows[0 : len(rows)] == as_tuples and rows[-1] == as_tuples[-1]
            for row in as_tuples:
                if not row[1]:
                    loaded[row[layout.key_index]] = row[FIRST_VALUE:]
            rejected: list[Rejected] = []
            out = consolidator.feed_rows(layout, rows, rejected)
            assert not rejected
            snapshot.update(out.snapshot)
        assert encoder is not None
        assert native.raw_results() and ResultRows in kinds  # the snapshot came in one FETCH
        assert snapshot.keys() == loaded.keys() and len(snapshot) == ORDERS
        # every row held raw but the first, which takes the general path (it tells the
        # fast path which mz_timestamp text the snapshot's rows have)
        raw = [key for key, values in snapshot.items() if type(values).__name__ == "RawRow"]
        assert len(raw) == ORDERS - 1
        for key, values in snapshot.items():
            assert tuple(values) == loaded[key]
            assert encoder.encode(values, 7) == encoder.python_encode(loaded[key], 7)
    finally:
        await sub.close()


async def test_a_fetch_of_a_few_rows_is_a_list(emulator: Emulator) -> None:
    sub = await subscription(emulator)
    try:
        await sub.fetch()  # the snapshot
        with emulator.pg() as pg:
            pg.execute(
                "UPDATE triples SET updated_at = now() WHERE subject_id = "
                "(SELECT subject_id FROM triples WHERE predicate = 'order_status' LIMIT 1) "
                "AND predicate = 'order_status'"
            )
        for _ in range(50):  # a tick's change (two rows) and progress rows
            rows: Any = await sub.fetch()
            assert type(rows) is list
            if any(not row[1] for row in rows):
                break
        else:
            pytest.fail("the change did not arrive in 50 FETCHes")
    finally:
        await sub.close()
