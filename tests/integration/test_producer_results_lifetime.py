"""A snapshot's RawRows outlive their FETCH's cursor and connection: the RawResult
holds psycopg's PGresult (its owner), so libpq's result is cleared only once the last
RawRow pointing into it is gone, and documents written after the connection closed are
still the ones the loaded tuples give (a freed result would give garbage or crash).

Services: the devstack PostgreSQL (a private FreshMart schema of 100 orders) and a
private emulator; about a second.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.producer import native
from searchsync.producer.consolidate import Consolidator
from searchsync.producer.documents import register_text_loaders
from searchsync.producer.rows import Rejected
from searchsync.producer.subscribe import Subscription, connection_class
from tests.support.mzemu import Emulator, seeded_emulator

ORDERS = 100
VIEW = "orders_search_source_mv"

pytestmark = pytest.mark.skipif(native.speedups is None, reason="the C path is not built")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with seeded_emulator(ORDERS, tick_ms=100) as emu:
        yield emu


async def test_raw_rows_are_written_right_after_their_connection_closed(
    emulator: Emulator,
) -> None:
    conn = await connection_class().connect(emulator.dsn, autocommit=True)
    register_text_loaders(conn.adapters)
    sub = Subscription(conn, view=VIEW, envelope="diffs", key_column="order_id")
    consolidator = Consolidator(snapshot=True)
    snapshot: dict[str, Any] = {}
    try:
        await sub.declare(as_of=None, snapshot=True)
        while len(snapshot) < ORDERS:
            rows = await sub.fetch()
            layout = sub.layout
            assert layout is not None
            rejected: list[Rejected] = []
            snapshot.update(consolidator.feed_rows(layout, rows, rejected).snapshot)
            assert not rejected
            del rows  # the ResultRows, its transformer and the cursor's last reference
    finally:
        await sub.close()
    encoder = sub.encoder
    assert encoder is not None
    raw = {k: v for k, v in snapshot.items() if type(v).__name__ == "RawRow"}
    assert len(raw) == ORDERS - 1, "the snapshot's rows should be held raw"
    gc.collect()
    # written from libpq's text first (nothing loaded yet), then compared with the tuples
    documents = {key: encoder.encode(values, 7) for key, values in raw.items()}
    for key, values in raw.items():
        loaded = tuple(values)  # psycopg's loaders, after the close
        assert documents[key] == encoder.python_encode(loaded, 7), key
