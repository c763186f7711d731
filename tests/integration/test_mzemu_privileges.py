"""The emulator's roles and privileges (devstack/mzemu/privileges.py) over the wire.

Real services: a private emulator over the devstack's PostgreSQL, psycopg clients. A role
logs in only with LOGIN and its password; reading the view (SUBSCRIBE, SELECT) needs
USAGE on the database, the schema and the session's cluster and SELECT on the view,
each refused with Materialize's wording when missing; only the superuser (the
emulator's login) grants, and it needs no grant.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from tests.support.mzemu import Emulator, create_schema, drop_schema, start_emulator

pytestmark = pytest.mark.timeout(120)

VIEW = '"materialize.public.orders_search_source_mv"'
PASSWORD = f"p-{secrets.token_hex(6)}"
GRANTS = {
    'DATABASE "materialize"': "USAGE ON DATABASE materialize",
    'SCHEMA "materialize.public"': "USAGE ON SCHEMA materialize.public",
    f"MATERIALIZED VIEW {VIEW}": "SELECT ON TABLE materialize.public.orders_search_source_mv",
    'CLUSTER "serving"': "USAGE ON CLUSTER serving",
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    schema = create_schema(orders=3)
    emu = start_emulator(schema)
    with emu.connect(autocommit=True) as admin:
        admin.execute(f"CREATE ROLE reader WITH LOGIN PASSWORD '{PASSWORD}'")
        admin.execute("CREATE ROLE nologin WITH PASSWORD 'x'")
        for grant in GRANTS.values():
            admin.execute(f"GRANT {grant} TO reader")
    yield emu
    emu.close()
    drop_schema(schema)


def connect(emu: Emulator, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=emu.host, port=emu.port, user=user, password=password, dbname="materialize",
        autocommit=True, connect_timeout=10,
    )  # fmt: skip


def read(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """A SELECT and a SUBSCRIBE of the view on cluster serving; the rows the SELECT saw."""
    conn.execute("SET CLUSTER = serving")
    rows = conn.execute("SELECT * FROM orders_search_source_mv").fetchall()
    with conn.transaction():
        conn.execute("DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM orders_search_source_mv)")
        conn.execute("FETCH ALL c WITH (timeout = '1s')")
    return len(rows)


def test_login_needs_login_and_the_password(emulator: Emulator) -> None:
    with connect(emulator, "reader", PASSWORD) as conn:
        assert read(conn) == 3
    for user, password in (("reader", "wrong"), ("nologin", "x"), ("nobody", PASSWORD)):
        with pytest.raises(psycopg.OperationalError, match="invalid password"):
            connect(emulator, user, password)


@pytest.mark.parametrize("missing", list(GRANTS))
def test_each_missing_grant_is_refused_naming_its_object(emulator: Emulator, missing: str) -> None:
    with emulator.connect(autocommit=True) as admin:
        admin.execute(f"REVOKE {GRANTS[missing]} FROM reader")
    try:
        with connect(emulator, "reader", PASSWORD) as conn:
            conn.execute("SET CLUSTER = serving")
            for statement in (
                "SELECT * FROM orders_search_source_mv",
                "DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM orders_search_source_mv)",
            ):
                with pytest.raises(errors.InsufficientPrivilege) as raised, conn.transaction():
                    conn.execute(statement)
                assert str(raised.value) == f"permission denied for {missing}"
    finally:
        with emulator.connect(autocommit=True) as admin:
            admin.execute(f"GRANT {GRANTS[missing]} TO reader")
    with connect(emulator, "reader", PASSWORD) as conn:
        assert read(conn) == 3  # granted again: reads again


def test_only_the_superuser_grants_and_it_needs_no_grant(emulator: Emulator) -> None:
    with connect(emulator, "reader", PASSWORD) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied to grant"):
            conn.execute("GRANT USAGE ON CLUSTER compute TO reader")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE other WITH LOGIN PASSWORD 'y'")
    with emulator.connect(autocommit=True) as admin:
        assert read(admin) == 3
        with pytest.raises(errors.DuplicateObject):
            admin.execute("CREATE ROLE reader")
        with pytest.raises(psycopg.Error, match="unknown catalog item"):
            admin.execute("GRANT SELECT ON TABLE other_view TO reader")
    with connect(emulator, "reader", PASSWORD) as conn:  # another cluster: no USAGE there
        conn.execute("SET CLUSTER = compute")
        with pytest.raises(errors.InsufficientPrivilege, match='CLUSTER "compute"'):
            conn.execute("SELECT * FROM orders_search_source_mv")
