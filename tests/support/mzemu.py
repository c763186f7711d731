"""Private Materialize emulators over private FreshMart schemas, for integration tests.

Needs the devstack PostgreSQL (``.devstack/env``). Each emulator is its own
process on its own port (MZEMU_PORT=0, the port is read from its log) serving its
own schema ``test_mz_<hex>``, so a test may use short ticks, long retention, small
buffers, drop the view or kill the process without disturbing anyone.

Use the fixtures (``import`` them into a test module or a conftest)::

    from tests.support.mzemu import freshmart_schema, mzemu  # noqa: F401

    def test_x(mzemu: Emulator) -> None:
        with mzemu.connect() as conn: ...          # psycopg to the emulator
        with mzemu.pg() as pg: ...                 # psycopg to PostgreSQL, search_path set

or call :func:`start_emulator` / :func:`create_schema` directly for custom settings (they
live in devstack.harness.mzemu, shared with bench/, and are re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from devstack.harness.mzemu import (
    Emulator,
    create_schema,
    drop_schema,
    pg_dsn,
    seed_orders,
    start_emulator,
)

__all__ = [
    "Emulator",
    "create_schema",
    "drop_schema",
    "freshmart_schema",
    "mzemu",
    "pg_dsn",
    "seed_orders",
    "seeded_emulator",
    "start_emulator",
]


@contextmanager
def seeded_emulator(orders: int, *, tick_ms: int = 25) -> Iterator[Emulator]:
    """A private emulator over a fresh schema of ``orders`` FreshMart orders; both are
    gone afterwards (for a module fixture)."""
    schema = create_schema(orders=orders)
    try:
        emulator = start_emulator(schema, tick_ms=tick_ms)
        try:
            yield emulator
        finally:
            emulator.close()
    finally:
        drop_schema(schema)


@pytest.fixture
def freshmart_schema() -> Iterator[str]:
    """A fresh schema with the FreshMart schema and 3 orders (dropped afterwards)."""
    schema = create_schema(orders=3)
    try:
        yield schema
    finally:
        drop_schema(schema)


@pytest.fixture
def mzemu(freshmart_schema: str) -> Iterator[Emulator]:
    """A private emulator (25 ms ticks, 10 min retention) over ``freshmart_schema``."""
    emulator = start_emulator(freshmart_schema)
    try:
        yield emulator
    finally:
        emulator.close()
