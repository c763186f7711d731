"""producer/lookup.py against the emulator: keys' rows at one timestamp, as the producer
encodes them.

Services: the devstack PostgreSQL (a private FreshMart schema) and a private
Materialize emulator over it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from searchsync.producer.documents import register_text_loaders
from searchsync.producer.lookup import read_current
from searchsync.producer.rows import FIRST_VALUE
from searchsync.producer.subscribe import Subscription
from tests.support.mzemu import Emulator, freshmart_schema, mzemu

__all__ = ["freshmart_schema", "mzemu"]

VIEW = "orders_search_source_mv"


async def _connect(emulator: Emulator) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(emulator.dsn, autocommit=True)
    register_text_loaders(conn.adapters)
    return conn


async def _view_docs_as_of(emulator: Emulator, ts: int) -> dict[str, list[bytes]]:
    """The whole view's snapshot at ``ts`` through the producer's own subscription,
    encoded at version ``ts``: what the live path writes for these rows."""
    conn = await _connect(emulator)
    try:
        sub = Subscription(conn, view=VIEW, envelope="diffs", key_column="order_id")
        await sub.declare(as_of=ts, snapshot=True)
        docs: dict[str, list[bytes]] = {}
        done = False
        while not done:
            for row in await sub.fetch():
                assert sub.layout is not None and sub.encoder is not None
                if row[1]:  # mz_progressed
                    done = int(row[0]) > ts
                    continue
                if int(row[0]) > ts:  # a change after the snapshot
                    continue
                assert int(row[0]) == ts and row[2] == 1
                key = str(row[sub.layout.key_index])
                docs.setdefault(key, []).append(sub.encoder.encode(row[FIRST_VALUE:], ts))
        return docs
    finally:
        await conn.close()


def test_rows_come_at_their_timestamp_encoded_as_the_live_path_does(mzemu: Emulator) -> None:
    with mzemu.pg() as pg:
        pg.execute(
            "UPDATE triples SET object_value = 'shipped' "
            "WHERE subject_id = 'order:FM-1002' AND predicate = 'order_status'"
        )
        pg.execute(  # a second live row for FM-1003: a second task
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
            "('task:T2', 'task_of_order', 'order:FM-1003', 'entity_ref'), "
            "('task:T2', 'task_status', 'assigned', 'string')"
        )
    before = mzemu.admin("mzemu_tick()")  # the changes are closed at or before this ts

    async def run() -> None:
        conn = await _connect(mzemu)
        try:
            keys = ["order:FM-1001", "order:FM-1002", "order:FM-1003", "order:FM-9999"]
            current = await read_current(conn, view=VIEW, key_column="order_id", keys=keys)
            # the connection is usable again: a second read works on it
            again = await read_current(conn, view=VIEW, key_column="order_id", keys=keys[:1])
        finally:
            await conn.close()
        assert current.ts >= before and again.ts >= current.ts
        assert set(current.docs) == set(keys)
        assert current.docs["order:FM-9999"] == []
        assert len(current.docs["order:FM-1003"]) == 2
        assert b'"order_status":"shipped"' in current.docs["order:FM-1002"][0]
        assert current.docs["order:FM-1001"][0].endswith(b',"sync_version":%d}' % current.ts)
        # exactly the view at that timestamp, byte for byte as the producer encodes it
        whole = await _view_docs_as_of(mzemu, current.ts)
        for key in keys:
            assert sorted(current.docs[key]) == sorted(whole.get(key, [])), key

    asyncio.run(run())


def test_a_change_committed_after_the_read_is_not_in_it(mzemu: Emulator) -> None:
    async def run() -> None:
        conn = await _connect(mzemu)
        try:
            first = await read_current(
                conn, view=VIEW, key_column="order_id", keys=["order:FM-1001"]
            )
            with mzemu.pg() as pg:
                pg.execute("DELETE FROM triples WHERE subject_id = 'order:FM-1001'")
            mzemu.admin("mzemu_tick()")
            second = await read_current(
                conn, view=VIEW, key_column="order_id", keys=["order:FM-1001"]
            )
        finally:
            await conn.close()
        assert len(first.docs["order:FM-1001"]) == 1
        assert second.docs["order:FM-1001"] == [] and second.ts > first.ts
        # the first read still holds at its own timestamp
        assert (await _view_docs_as_of(mzemu, first.ts))["order:FM-1001"] == first.docs[
            "order:FM-1001"
        ]

    asyncio.run(run())


def test_a_snapshot_that_does_not_complete_in_time_raises(mzemu: Emulator) -> None:
    mzemu.admin("mzemu_pause_ticks(5000)")  # no tick: the subscription never starts

    async def run() -> None:
        conn = await _connect(mzemu)
        try:
            with pytest.raises(TimeoutError, match="did not complete the snapshot of 1 keys"):
                await read_current(
                    conn,
                    view=VIEW,
                    key_column="order_id",
                    keys=["order:FM-1001"],
                    within_seconds=0.5,
                )
            assert conn.closed
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    finally:
        mzemu.admin("mzemu_resume_ticks()")
