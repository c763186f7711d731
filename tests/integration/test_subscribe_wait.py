"""producer/subscribe.py's two ways of waiting on a FETCH, against a private emulator:
the ready-read wait (ReadyReadsConnection) and psycopg's own (plain AsyncConnection,
what connection_class gives on a psycopg release the override was not written for)
read the same rows, through the installed psycopg's real generators.

Services: the devstack PostgreSQL (a private FreshMart schema of 150 orders, ~300 KB
of snapshot: many libpq buffer reads per FETCH) and a private emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from searchsync.producer.subscribe import (
    ReadyReadsConnection,
    Subscription,
    connection_class,
    ready_reads_supported,
)
from tests.support.mzemu import Emulator, seeded_emulator

ORDERS = 150
VIEW = "orders_search_source_mv"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with seeded_emulator(ORDERS, tick_ms=100) as emu:
        yield emu


async def snapshot_rows(
    emu: Emulator, cls: type[psycopg.AsyncConnection[Any]], fetch_rows: int
) -> list[tuple[Any, ...]]:
    """The data rows of the view's snapshot (``mz_diff`` and the columns; the
    timestamp left out) read with FETCH ``fetch_rows`` until the first progress row
    after them. Each FETCH waits at most the emulator's tick."""
    conn = await cls.connect(emu.dsn, autocommit=True)
    try:
        assert type(conn) is cls
        sub = Subscription(
            conn, view=VIEW, envelope="diffs", key_column="order_id", fetch_rows=fetch_rows
        )
        await sub.declare(as_of=None, snapshot=True)
        rows: list[tuple[Any, ...]] = []
        while True:
            for row in await sub.fetch():
                if not row[1]:  # mz_progressed false: a data row
                    rows.append(row[2:])
                elif rows:  # the first progress row after the snapshot's rows
                    return sorted(rows, key=repr)
    finally:
        await conn.close()


@pytest.mark.parametrize("fetch_rows", [7, 2000])
async def test_ready_reads_and_psycopgs_own_wait_read_the_same_rows(
    emulator: Emulator, fetch_rows: int
) -> None:
    ours = await snapshot_rows(emulator, ReadyReadsConnection, fetch_rows)
    plain = await snapshot_rows(emulator, psycopg.AsyncConnection, fetch_rows)
    assert len(ours) == ORDERS
    assert ours == plain


def test_the_installed_psycopg_gets_the_path_its_release_was_read_for() -> None:
    expected = (
        ReadyReadsConnection
        if ready_reads_supported(psycopg.__version__)
        else psycopg.AsyncConnection
    )
    assert connection_class() is expected
