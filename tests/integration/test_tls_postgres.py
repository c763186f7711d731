"""PostgreSQL over TLS, as Materialize reads it (a source connection with ``SSL MODE
verify-full`` and ``SSL CERTIFICATE AUTHORITY``): here the emulator reads it through
MZEMU_PG_DSN.

The module starts a private PostgreSQL through the devstack's own lib with its opt-in TLS
(``POSTGRES_TLS_CERT``/``_KEY``/``_CA``: ``ssl=on``, TCP over TLS only), a throwaway CA
(``tests.support.tls``), its own port and directory, and a small FreshMart schema; the
devstack PostgreSQL is not used. Checked: the emulator with ``verify-full`` and the right
CA serves a SUBSCRIBE of the view (snapshot, then a change) and a pass-through SELECT,
and PostgreSQL sees each of its connections encrypted; with a wrong CA it exits 1 naming
PostgreSQL and the certificate; plain text is refused by the server (psycopg and the
emulator, which says TLS is required). The pass-through link (``devstack/mzemu/backend``,
the emulator's own wire client) is also checked on its own against the same server.
About 10 s, most of it initdb.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from devstack.mzemu.backend import PgLink, link_params
from devstack.mzemu.errors import MzError
from tests.support.mzemu import Emulator, create_schema, start_emulator
from tests.support.tls import Authority, authorities
from tests.support.tls_postgres import TlsPostgres

__all__ = ["authorities"]  # the fixture, from tests.support.tls

VIEW = "orders_search_source_mv"
ORDERS = 3
# SUBSCRIBE … WITH (PROGRESS) columns: mz_timestamp, mz_progressed, mz_diff, then the view's
ORDER_ID, STATUS = 3, 5


@pytest.fixture(scope="module")
def postgres(authorities: tuple[Authority, Authority]) -> Iterator[TlsPostgres]:
    server = TlsPostgres(authorities[0])
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def schema(postgres: TlsPostgres) -> Iterator[str]:
    """The FreshMart schema with 3 orders, made by the harness over the TLS server."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres.database_url)  # the harness's pg_dsn()
        yield create_schema(orders=ORDERS)
    # dropped with the server's directory


def emulator_on(postgres: TlsPostgres, schema: str, dsn: str) -> Emulator:
    """A private emulator reading ``schema`` through ``dsn``; RuntimeError (with its log)
    if it does not start within 20 s."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres.database_url)
        return start_emulator(schema, env={"MZEMU_PG_DSN": dsn}, timeout=20)


def refusal(postgres: TlsPostgres, schema: str, dsn: str) -> str:
    """The log of an emulator that must not start with ``dsn`` (one that does is stopped
    and the test fails)."""
    try:
        emulator = emulator_on(postgres, schema, dsn)
    except RuntimeError as failed:
        assert "emulator did not start" in str(failed)
        return str(failed)
    emulator.kill()
    emulator.close()
    pytest.fail(f"the emulator started with {dsn}")


def verify_full(postgres: TlsPostgres, ca: Authority) -> str:
    return postgres.url(f"sslmode=verify-full&sslrootcert={ca.cert}")


def test_the_lib_records_a_verify_full_url_and_the_server_refuses_plain_text(
    postgres: TlsPostgres, authorities: tuple[Authority, Authority]
) -> None:
    assert postgres.database_url.endswith("?sslmode=verify-full&sslrootcert=" + (
        f"{postgres.state}/postgres/ca.pem"
    ))  # fmt: skip
    with psycopg.connect(postgres.database_url) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(postgres.url("sslmode=disable"), connect_timeout=10).close()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(verify_full(postgres, authorities[1]), connect_timeout=10).close()


def _fetch_until(cur: psycopg.Cursor[Any], rows: list[tuple[Any, ...]], done: Any) -> None:
    deadline = time.monotonic() + 20
    while not done(rows):
        assert time.monotonic() < deadline, f"not reached within 20 s; got {rows}"
        cur.execute("FETCH ALL c WITH (timeout = '50ms')")
        rows.extend(cur.fetchall())


def test_the_emulator_reads_over_verify_full_with_the_right_ca(
    postgres: TlsPostgres, schema: str, authorities: tuple[Authority, Authority]
) -> None:
    emulator = emulator_on(postgres, schema, verify_full(postgres, authorities[0]))
    try:
        with emulator.connect() as conn:
            conn.execute("SET CLUSTER = serving")
            cur = conn.cursor()
            cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
            rows: list[tuple[Any, ...]] = []
            # (mz_timestamp, mz_progressed, mz_diff, order_id, …): the snapshot is closed
            # once a progress row follows data rows
            _fetch_until(cur, rows, lambda rs: any(not r[1] for r in rs) and rs[-1][1])
            snapshot = sorted(r[ORDER_ID] for r in rows if not r[1] and r[2] == 1)
            assert snapshot == [f"order:FM-{n}" for n in range(1001, 1001 + ORDERS)]

            with psycopg.connect(postgres.database_url, autocommit=True) as pg:
                pg.execute(f"SET search_path = {schema}")
                pg.execute(
                    "UPDATE triples SET object_value = 'packed' "
                    "WHERE subject_id = 'order:FM-1002' AND predicate = 'order_status'"
                )
            changes: list[tuple[Any, ...]] = []
            _fetch_until(cur, changes, lambda rs: any(not r[1] for r in rs) and rs[-1][1])
            updated = sorted((r[2], r[ORDER_ID], r[STATUS]) for r in changes if not r[1])
            assert updated == [(-1, "order:FM-1002", "placed"), (1, "order:FM-1002", "packed")]
            conn.rollback()

            # a plain SELECT goes through the emulator's own wire link to PostgreSQL
            row = conn.execute(f"SELECT count(*) FROM {VIEW}").fetchone()
            assert row == (ORDERS,)

            with psycopg.connect(postgres.database_url) as pg:
                encrypted = pg.execute(
                    "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                    "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'mzemu-%' "
                    "ORDER BY 1"
                ).fetchall()
            assert encrypted == [("mzemu-engine", True), ("mzemu-passthrough", True)]

            # a cancel reaches the pass-through statement (its CancelRequest goes plain,
            # as libpq's does: PostgreSQL reads it before pg_hba.conf)
            conn.rollback()
            timer = threading.Timer(0.5, conn.cancel_safe)
            timer.start()
            with pytest.raises(pgerrors.QueryCanceled):
                conn.execute("SELECT pg_sleep(30)")
            timer.cancel()
    finally:
        emulator.close()


def test_the_emulator_refuses_a_wrong_ca_naming_postgresql_and_the_certificate(
    postgres: TlsPostgres, schema: str, authorities: tuple[Authority, Authority]
) -> None:
    log = refusal(postgres, schema, verify_full(postgres, authorities[1]))
    assert f"cannot start: PostgreSQL at 127.0.0.1:{postgres.port}" in log
    assert "certificate verify failed" in log
    assert "check sslrootcert" in log


def test_the_emulator_in_plain_text_is_refused_naming_postgresql(
    postgres: TlsPostgres, schema: str
) -> None:
    log = refusal(postgres, schema, postgres.url("sslmode=disable"))
    assert f"cannot start: PostgreSQL at 127.0.0.1:{postgres.port}" in log
    assert "no encryption" in log and "it takes TLS only" in log


def test_the_pass_through_link_follows_sslmode_and_sslrootcert(
    postgres: TlsPostgres, authorities: tuple[Authority, Authority]
) -> None:
    async def connect(dsn: str) -> bool:
        link = await asyncio.wait_for(PgLink.connect(link_params(dsn, {}, "public"), {}), 20)
        try:
            await link.run_internal("SELECT 1")
            return link.writer.get_extra_info("ssl_object") is not None
        finally:
            link.close()

    assert asyncio.run(connect(verify_full(postgres, authorities[0])))
    assert asyncio.run(connect(postgres.url("sslmode=require")))  # encrypted, unchecked
    assert asyncio.run(connect(postgres.url("sslmode=prefer")))  # libpq's default
    for query, words in [
        (f"sslmode=verify-full&sslrootcert={authorities[1].cert}", "certificate verify failed"),
        (f"sslmode=verify-ca&sslrootcert={authorities[1].cert}", "certificate verify failed"),
        ("sslmode=disable", "no encryption"),
    ]:
        with pytest.raises(MzError, match=words):
            asyncio.run(connect(postgres.url(query)))
