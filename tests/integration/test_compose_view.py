"""The compose deployment's materialized view runs the devstack view's query.

Services: the devstack PostgreSQL (a private FreshMart schema) and a private emulator.
compose/materialize/view.sed turns devstack/sql/030_orders_search_source_mv.sql into
the CREATE MATERIALIZED VIEW that mz-init sends to Materialize; the emulator cannot
create a materialized view, but it runs the query that view maintains, on the cluster
the compose producer subscribes on (MZ_CLUSTER), and that query must return exactly
the rows of the devstack view it serves. The rest of init.sql is Materialize-only
(tests/unit/compose/test_materialize_init.py checks it without services).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import sql

from tests.support.mzemu import Emulator, create_schema, drop_schema, start_emulator
from tests.unit.compose.deployment import compose_file
from tests.unit.compose.test_materialize_init import HEADER, generated_view


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    schema = create_schema(orders=6)
    try:
        running = start_emulator(schema)
        try:
            yield running
        finally:
            running.close()
    finally:
        drop_schema(schema)


def test_the_compose_views_query_returns_the_devstack_views_rows(emulator: Emulator) -> None:
    before, _, query = generated_view().partition(HEADER)
    assert before and query, "the generated file has the materialized view's header"
    query = query.strip().removesuffix(";")
    cluster = compose_file()["x-searchsync-env"]["MZ_CLUSTER"]
    with emulator.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("SET CLUSTER = {}").format(sql.Identifier(cluster)))
        compose_rows = conn.execute(
            sql.SQL("SELECT * FROM ({}) AS compose_view ORDER BY order_id").format(sql.SQL(query))
        ).fetchall()
        devstack_rows = conn.execute(
            "SELECT * FROM orders_search_source_mv ORDER BY order_id"
        ).fetchall()
    assert len(devstack_rows) == 6
    assert compose_rows == devstack_rows
