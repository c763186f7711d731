"""The compose deployment's materialized view runs the devstack view's query.

Services: the devstack PostgreSQL (a private FreshMart schema) and a private emulator.
compose/materialize/view.sed turns devstack/sql/030_orders_search_source_mv.sql into
the CREATE MATERIALIZED VIEW that mz-init sends to Materialize; the emulator cannot
create a materialized view, but it runs the query that view maintains, on the cluster
the compose producer subscribes on (MZ_CLUSTER), and that query must return exactly
the rows of the devstack view it serves. The rest of init.sql is Materialize-only
(tests/unit/compose/test_materialize_init.py checks it without services) except its
psql part, which the real psql runs here against PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from tests.support.mzemu import Emulator, create_schema, drop_schema, pg_dsn, start_emulator
from tests.unit.compose.deployment import ROOT, compose_file
from tests.unit.compose.test_materialize_init import HEADER, STORES_VIEW, generated_view


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


def test_the_compose_stores_view_returns_the_devstack_stores_rows(emulator: Emulator) -> None:
    """The second view (025_stores_search_source_mv.sql), served by the emulator as a
    re-evaluated query, as compose's materialized view maintains it."""
    header = HEADER.replace("orders_search_source_mv", "stores_search_source_mv")
    before, _, query = generated_view(STORES_VIEW).partition(header)
    assert before and query, "the generated file has the materialized view's header"
    query = query.strip().removesuffix(";")
    with emulator.connect(autocommit=True) as conn:
        compose_rows = conn.execute(
            sql.SQL("SELECT * FROM ({}) AS compose_view ORDER BY store_id").format(sql.SQL(query))
        ).fetchall()
        devstack_rows = conn.execute(
            "SELECT * FROM stores_search_source_mv ORDER BY store_id"
        ).fetchall()
    assert devstack_rows
    # order_count: each of the six orders has a store
    assert sum(int(str(row[4])) for row in devstack_rows) == 6
    assert compose_rows == devstack_rows


@pytest.fixture
def database() -> Iterator[str]:
    """A private PostgreSQL database whose ``mz_catalog.mz_clusters`` stands in for
    Materialize's (a deployment that already has ``compute`` and ``quickstart``)."""
    name = f"test_compose_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(pg_dsn(), dbname=name, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA mz_catalog")
            conn.execute("CREATE TABLE mz_catalog.mz_clusters (name text)")
            conn.execute("INSERT INTO mz_catalog.mz_clusters VALUES ('quickstart'), ('compute')")
        yield name
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_psql_builds_the_missing_clusters_and_quotes_the_secret(database: str) -> None:
    """init.sql's psql part, run by the real psql (PostgreSQL 15's, as in the postgres:15
    image mz-init uses) against PostgreSQL: \\getenv reads the variables compose sets,
    and the cluster guard yields a CREATE CLUSTER for each cluster the catalog lacks.
    The guard's \\gexec is replaced by \\g so the statements are printed, not run (this
    is not Materialize), and the secret's literal is printed instead of sent."""
    text = (ROOT / "compose" / "materialize" / "init.sql").read_text()
    script = text[: text.index("\n\\gexec\n")] + "\n\\g\nSELECT :'pg_password';\n"
    password = "it's-a-secret"  # a quote: psql must escape it in the literal
    dsn = psycopg.conninfo.make_conninfo(pg_dsn(), dbname=database)
    result = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=script,
        env={**os.environ, "POSTGRES_PASSWORD": password, "MZ_CLUSTER_SIZE": "25cc"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "CREATE CLUSTER ingest (SIZE = '25cc')",
        "CREATE CLUSTER serving (SIZE = '25cc')",
        password,
    ]
