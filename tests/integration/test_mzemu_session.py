"""Session rules of the emulator: clusters, transactions, pass-through, psql, admin calls.

Services: the devstack PostgreSQL (and the ``psql`` client). Each test runs a private
emulator process (``tests.support.mzemu``) over its own FreshMart schema.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests.support.mzemu import Emulator, freshmart_schema, mzemu

__all__ = ["freshmart_schema", "mzemu"]

VIEW = "orders_search_source_mv"


def _notices(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    # A Diagnostic is only valid inside the handler: keep its fields.
    seen: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda d: seen.append((d.sqlstate or "", d.message_primary or "")))
    return seen


def test_cluster_variable_and_startup_option(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn:
        assert conn.execute("SHOW CLUSTER").fetchone() == ("quickstart",)
        conn.execute("SET CLUSTER = serving")
        assert conn.execute("SHOW cluster").fetchone() == ("serving",)
        conn.execute("SET cluster TO compute")
        assert conn.execute("SHOW CLUSTER").fetchone() == ("compute",)
    for options in ("--cluster=serving", "-c cluster=serving"):
        with psycopg.connect(mzemu.dsn, options=options, autocommit=True) as conn:
            assert conn.execute("SHOW CLUSTER").fetchone() == ("serving",)


def test_unknown_cluster_is_a_notice_then_an_error(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn:
        notices = _notices(conn)
        conn.execute("SET CLUSTER = nope")
        assert notices == [("MZ007", 'cluster "nope" does not exist')]
        with pytest.raises(psycopg.Error, match="unknown cluster 'nope'"):
            conn.execute(f"SELECT count(*) FROM {VIEW}")
        conn.execute("SET CLUSTER = serving")
        assert conn.execute(f"SELECT count(*) FROM {VIEW}").fetchone() == (3,)


def test_set_cluster_after_a_query_in_a_transaction_fails(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        conn.execute("SET CLUSTER = serving")  # BEGIN; SET: no operation yet, allowed
        conn.execute("SELECT 1")
        with pytest.raises(pgerrors.ActiveSqlTransaction) as info:
            conn.execute("SET CLUSTER = compute")
        assert info.value.sqlstate == "25001"
        assert str(info.value) == "SET cluster cannot be called in an active transaction"
        with pytest.raises(pgerrors.InFailedSqlTransaction):
            conn.execute("SHOW CLUSTER")
        conn.rollback()
        assert conn.execute("SHOW CLUSTER").fetchone() == ("serving",)


def test_declare_outside_a_transaction_block_fails(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn:
        for params in (None, [1]):
            query = f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}" + (" AS OF %s" if params else "")
            with pytest.raises(pgerrors.NoActiveSqlTransaction) as info:
                conn.execute(query, params)
            assert info.value.sqlstate == "25P01"
            assert str(info.value) == "DECLARE CURSOR can only be used in transaction blocks"


def test_subscribe_transaction_allows_only_fetch_and_close(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        conn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        with pytest.raises(pgerrors.InvalidTransactionState) as info:
            conn.execute("SELECT 1")
        assert str(info.value) == "SUBSCRIBE in transactions must be the only read statement"
        with pytest.raises(pgerrors.InFailedSqlTransaction):
            conn.execute("FETCH ALL c")
        conn.rollback()
        conn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        cur = conn.execute("FETCH ALL c WITH (timeout = '0s')")
        assert len(cur.fetchall()) == 3
        assert conn.execute("CLOSE c").statusmessage == "CLOSE CURSOR"
        with pytest.raises(pgerrors.InvalidCursorName, match='cursor "c" does not exist'):
            conn.execute("FETCH ALL c")
        conn.rollback()


def test_a_read_transaction_cannot_declare_a_subscribe(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        conn.execute(f"SELECT count(*) FROM {VIEW}")
        with pytest.raises(pgerrors.ReadOnlySqlTransaction):
            conn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")


def test_queries_pass_through_to_postgresql(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn:
        conn.execute("SET CLUSTER = serving")
        assert conn.execute(f"SELECT count(*) FROM {VIEW}").fetchone() == (3,)
        row = conn.execute(
            f"SELECT order_number, order_total_amount FROM {VIEW} WHERE order_id = %s",
            ["order:FM-1002"],
        ).fetchone()
        assert row is not None and row[0] == "FM-1002" and str(row[1]) == "7.50"
        cur = conn.cursor(binary=True)
        cur.execute(f"SELECT order_id FROM {VIEW} ORDER BY order_id")
        assert [r[0] for r in cur.fetchall()] == [f"order:FM-{n}" for n in (1001, 1002, 1003)]
        with pytest.raises(pgerrors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with mzemu.connect() as conn:
        conn.execute("SELECT 1")
        with pytest.raises(pgerrors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(pgerrors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_mz_now_is_an_mz_timestamp(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn:
        cur = conn.execute("SELECT mz_now()")
        assert cur.description is not None and cur.description[0].type_code == 16552
        row = cur.fetchone()
        assert row is not None
        now = int(str(row[0]))
        cur = conn.execute("SELECT mz_now()::text")
        assert cur.description is not None and cur.description[0].type_code == 25
        later = cur.fetchone()
        assert later is not None and int(str(later[0])) >= now
        assert now < mzemu.admin("mzemu_frontier()")


def test_prepared_fetch_and_parameters(mzemu: Emulator) -> None:
    now = mzemu.admin("mzemu_frontier()") - 1
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF %s", [now])
        total = 0
        for _ in range(4):  # prepare=True: named statement, Bind/Execute by name
            cur.execute("FETCH ALL c WITH (timeout = '0s')", prepare=True)
            total += len(cur.fetchall())
        assert total == 3
        cur.execute("FETCH ALL c WITH (timeout = '0s')", binary=True)
        assert cur.fetchall() == []


def test_bare_subscribe_streams_until_up_to(mzemu: Emulator) -> None:
    now = mzemu.admin("mzemu_frontier()") - 1
    with mzemu.connect(autocommit=True) as conn:
        notices = _notices(conn)
        rows = list(
            conn.cursor().stream(f"SUBSCRIBE {VIEW} WITH (PROGRESS) AS OF {now} UP TO {now + 1}")
        )
        assert [bool(r[1]) for r in rows] == [True, False, False, False]
        assert any("streaming SUBSCRIBE rows directly" in text for _code, text in notices)


def test_connection_startup_checks(mzemu: Emulator) -> None:
    with psycopg.connect(mzemu.dsn, sslmode="prefer") as conn:
        assert conn.info.parameter_status("server_version") == "9.5.0"
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.parameter_status("standard_conforming_strings") == "on"
        assert conn.info.parameter_status("TimeZone") == "UTC"
        assert conn.info.backend_pid > 0
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        psycopg.connect(mzemu.dsn, sslmode="require")
    with pytest.raises(psycopg.OperationalError, match="invalid password"):
        psycopg.connect(mzemu.dsn.replace("password=materialize", "password=wrong"))


def test_admin_drop_connections_and_pause_ticks(mzemu: Emulator) -> None:
    victim = mzemu.connect(autocommit=True)
    try:
        assert mzemu.admin("mzemu_drop_connections()") >= 1
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
    finally:
        victim.close()
    mzemu.admin("mzemu_pause_ticks(600000)")
    paused = mzemu.admin("mzemu_frontier()")
    time.sleep(0.2)
    assert mzemu.admin("mzemu_frontier()") == paused
    forced = mzemu.admin("mzemu_tick()")
    assert forced >= paused
    mzemu.admin("mzemu_resume_ticks()")
    deadline = time.monotonic() + 10
    while mzemu.admin("mzemu_frontier()") <= forced + 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_runs_the_runbook_commands(mzemu: Emulator) -> None:
    env = {"PGPASSWORD": "materialize", "PATH": "/usr/bin:/bin"}
    base = ["psql", "-h", mzemu.host, "-p", str(mzemu.port), "-U", "materialize", "-tA"]
    out = subprocess.run(
        [*base, "-c", f"SET CLUSTER = serving; SELECT COUNT(*) FROM {VIEW};"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["SET", "3"]
    now = mzemu.admin("mzemu_frontier()") - 1
    out = subprocess.run(
        [*base, "-c", f"COPY (SUBSCRIBE {VIEW} AS OF {now} UP TO {now + 1}) TO STDOUT"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.split("\t")[:2] == [str(now), "1"] for line in lines)


def test_cancel_from_another_thread_ends_a_copy(mzemu: Emulator) -> None:
    with mzemu.connect(autocommit=True) as conn, conn.cursor() as cur:
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        with (
            pytest.raises(pgerrors.QueryCanceled),
            cur.copy(f"COPY (SUBSCRIBE {VIEW}) TO STDOUT") as copy,
        ):
            while copy.read():
                pass
        timer.cancel()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_engine_recovers_from_a_lost_postgresql_connection(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT = false)")
        cur.execute("FETCH ALL c WITH (timeout = '0s')")
        with mzemu.pg() as pg:
            killed = pg.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'mzemu-engine' AND datname = current_database() "
                "AND query NOT LIKE '%%pg_terminate_backend%%' AND pid IN ("
                "  SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = "
                "  hashtext('mzemu:' || %s)::oid)",
                [mzemu.schema],
            ).fetchone()
            assert killed == (1,)
            # A change while the emulator is disconnected is kept in the log table.
            pg.execute(
                "UPDATE triples SET object_value = 'delivered' "
                "WHERE subject_id = 'order:FM-1001' AND predicate = 'order_status'"
            )
        seen: list[tuple[object, ...]] = []
        deadline = time.monotonic() + 30
        while not any(r[1] is False for r in seen):
            assert time.monotonic() < deadline, seen
            cur.execute("FETCH ALL c WITH (timeout = '100ms')")
            seen.extend(cur.fetchall())
        changes = sorted((int(str(r[2])), r[5]) for r in seen if r[1] is False)
        assert changes == [(-1, "placed"), (1, "delivered")]
    assert "tick failed" in mzemu.log()
