"""SUBSCRIBE through the emulator, as psycopg 3 sees it, in both DECLARE/FETCH and COPY forms.

Services: the devstack PostgreSQL. Each test runs a private emulator process
(``tests.support.mzemu``) with 25 ms ticks over its own FreshMart schema.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tests.support.mzemu import (
    Emulator,
    create_schema,
    drop_schema,
    freshmart_schema,
    mzemu,
    start_emulator,
)

__all__ = ["freshmart_schema", "mzemu"]

VIEW = "orders_search_source_mv"
DEADLINE_S = 20.0

Row = tuple[Any, ...]


class _Enough(Exception):
    pass


def _norm(row: Row) -> Row:
    """(ts:int, progressed:bool, diff:int|None, *columns) from FETCH or COPY text rows."""
    ts, progressed, diff, *cols = row
    if isinstance(progressed, str):
        progressed = progressed == "t"
        diff = None if diff is None else int(diff)
    return (int(ts), progressed, diff, *cols)


def fetch_more(
    cur: psycopg.Cursor[Row], rows: list[Row], done: Callable[[list[Row]], bool]
) -> None:
    """FETCH (short timeouts) from cursor ``c`` into ``rows`` until ``done(rows)``.

    Fails after 20 s.
    """
    deadline = time.monotonic() + DEADLINE_S
    while not done(rows):
        assert time.monotonic() < deadline, f"condition not reached; got {rows}"
        cur.execute("FETCH ALL c WITH (timeout = '50ms')")
        rows.extend(_norm(r) for r in cur.fetchall())


def fetch_until(cur: psycopg.Cursor[Row], done: Callable[[list[Row]], bool]) -> list[Row]:
    """New rows of cursor ``c`` until ``done(rows)``; fails after 20 s."""
    rows: list[Row] = []
    fetch_more(cur, rows, done)
    return rows


def copy_until(
    conn: psycopg.Connection[Row],
    subscribe: str,
    step: Callable[[list[Row]], bool],
) -> list[Row]:
    """Read ``COPY (subscribe) TO STDOUT`` rows until ``step(rows)`` returns True.

    Leaving the COPY with an exception makes psycopg cancel it, as a client would.
    """
    rows: list[Row] = []
    deadline = time.monotonic() + DEADLINE_S
    with conn.cursor() as cur:
        try:
            with cur.copy(f"COPY ({subscribe}) TO STDOUT") as copy:
                for raw in copy.rows():
                    rows.append(_norm(raw))
                    if step(rows):
                        raise _Enough
                    assert time.monotonic() < deadline, f"condition not reached; got {rows}"
        except _Enough:
            pass
    return rows


def frontier(rows: list[Row]) -> int:
    """The highest progress timestamp seen (0 if none)."""
    return max((r[0] for r in rows if r[1]), default=0)


def data(rows: list[Row]) -> list[Row]:
    return [r for r in rows if not r[1]]


def after_snapshot(rows: list[Row]) -> bool:
    """True once a progress row above the opening one has arrived."""
    return len(rows) > 1 and rows[0][1] and frontier(rows) > rows[0][0]


def set_status(emu: Emulator, order: str, status: str) -> None:
    """Change an order's status the way FreshMart writers do: delete + insert, one txn."""
    with emu.pg() as pg, pg.transaction():
        pg.execute(
            "DELETE FROM triples WHERE subject_id = %s AND predicate = 'order_status'", (order,)
        )
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, 'order_status', %s, 'string')",
            (order, status),
        )


def closed_after(rows: list[Row], pred: Callable[[Row], bool]) -> bool:
    """True once a data row matching ``pred`` exists and a progress row closed its time."""
    hits = [r[0] for r in data(rows) if pred(r)]
    return bool(hits) and frontier(rows) > max(hits)


@pytest.fixture(params=["fetch", "copy"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _stream(
    emu: Emulator, form: str, subscribe: str, step: Callable[[list[Row]], bool]
) -> list[Row]:
    """Run ``subscribe`` in the given form, calling ``step`` after each batch of rows."""
    if form == "copy":
        with emu.connect(autocommit=True) as conn:
            conn.execute("SET CLUSTER = serving")
            return copy_until(conn, subscribe, step)
    with emu.connect() as conn:
        conn.execute("SET CLUSTER = serving")
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR {subscribe}")
        rows = fetch_until(cur, step)
        conn.rollback()
        return rows


# --- the opening sequence ---------------------------------------------------------------


def test_opening_sequence_with_progress(mzemu: Emulator, form: str) -> None:
    rows = _stream(mzemu, form, f"SUBSCRIBE {VIEW} WITH (PROGRESS)", after_snapshot)
    as_of = rows[0][0]
    assert rows[0][1] is True and rows[0][2] is None and all(v is None for v in rows[0][3:])
    first_progress = next(i for i, r in enumerate(rows) if i > 0 and r[1])
    snapshot = rows[1:first_progress]
    assert sorted(r[3] for r in snapshot) == ["order:FM-1001", "order:FM-1002", "order:FM-1003"]
    assert {r[0] for r in snapshot} == {as_of}
    assert {r[2] for r in snapshot} == {1}
    assert rows[first_progress][0] > as_of


def test_snapshot_false_emits_no_rows_at_as_of(mzemu: Emulator, form: str) -> None:
    rows = _stream(
        mzemu, form, f"SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT = false)", after_snapshot
    )
    assert rows[0][1] is True
    assert data(rows) == []
    assert rows[1][1] is True and rows[1][0] > rows[0][0]


def test_output_columns_and_types(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
        cur.execute("FETCH 1 c")
        assert cur.description is not None
        names = [d.name for d in cur.description]
        assert names[:4] == ["mz_timestamp", "mz_progressed", "mz_diff", "order_id"]
        assert len(names) == 3 + 18
        assert [d.type_code for d in cur.description[:3]] == [1700, 16, 20]
        conn.rollback()
        cur.execute(f"DECLARE d CURSOR FOR SUBSCRIBE {VIEW}")
        cur.execute("FETCH 1 d")
        assert cur.description is not None
        assert [d.name for d in cur.description][:3] == ["mz_timestamp", "mz_diff", "order_id"]
        row = cur.fetchone()
        assert row is not None and isinstance(row[0], Decimal) and row[1] == 1


# --- changes -------------------------------------------------------------------------------


def test_update_is_one_retraction_and_one_insertion_at_one_timestamp(
    mzemu: Emulator, form: str
) -> None:
    written = threading.Event()

    def step(rows: list[Row]) -> bool:
        if not written.is_set() and after_snapshot(rows):
            set_status(mzemu, "order:FM-1001", "picking")
            written.set()
        return written.is_set() and closed_after(rows[1:], lambda r: r[0] > rows[0][0])

    rows = _stream(mzemu, form, f"SUBSCRIBE {VIEW} WITH (PROGRESS)", step)
    changes = [r for r in data(rows) if r[0] > rows[0][0]]
    assert len(changes) == 2
    assert len({r[0] for r in changes}) == 1
    by_diff = {r[2]: r for r in changes}
    assert set(by_diff) == {-1, 1}
    old, new = by_diff[-1], by_diff[1]
    assert old[3] == new[3] == "order:FM-1001"
    assert (old[5], new[5]) == ("placed", "picking")
    assert old[6:-1] == new[6:-1]  # everything but status and effective_updated_at


def test_delete_retracts_the_row(mzemu: Emulator, form: str) -> None:
    written = threading.Event()

    def step(rows: list[Row]) -> bool:
        if not written.is_set() and after_snapshot(rows):
            with mzemu.pg() as pg:
                pg.execute("DELETE FROM triples WHERE subject_id = 'order:FM-1002'")
            written.set()
        return written.is_set() and closed_after(rows[1:], lambda r: r[0] > rows[0][0])

    rows = _stream(mzemu, form, f"SUBSCRIBE {VIEW} WITH (PROGRESS)", step)
    changes = [r for r in data(rows) if r[0] > rows[0][0]]
    assert [(r[2], r[3], r[4]) for r in changes] == [(-1, "order:FM-1002", "FM-1002")]


def test_customer_address_edit_touches_every_order_of_the_customer() -> None:
    schema = create_schema(orders=6)  # C-1 placed 1001, 1003, 1005
    emu = start_emulator(schema)
    try:
        written = threading.Event()

        def step(rows: list[Row]) -> bool:
            if not written.is_set() and after_snapshot(rows):
                with emu.pg() as pg, pg.transaction():
                    pg.execute(
                        "DELETE FROM triples WHERE subject_id = 'customer:C-1' "
                        "AND predicate = 'customer_address'"
                    )
                    pg.execute(
                        "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
                        "VALUES ('customer:C-1', 'customer_address', '9 New Rd', 'string')"
                    )
                written.set()
            return written.is_set() and closed_after(rows[1:], lambda r: r[0] > rows[0][0])

        rows = _stream(emu, "fetch", f"SUBSCRIBE {VIEW} WITH (PROGRESS)", step)
    finally:
        emu.close()
        drop_schema(schema)
    changes = [r for r in data(rows) if r[0] > rows[0][0]]
    assert len({r[0] for r in changes}) == 1, "one transaction, one timestamp"
    assert Counter((r[3], r[2]) for r in changes) == Counter(
        {(f"order:FM-{n}", d): 1 for n in (1001, 1003, 1005) for d in (-1, 1)}
    )
    address = 3 + 10  # customer_address
    assert {r[address] for r in changes if r[2] == 1} == {"9 New Rd"}
    assert {r[address] for r in changes if r[2] == -1} == {"1 Main St"}


# --- history -------------------------------------------------------------------------------


def test_resume_as_of_frontier_minus_one_without_snapshot(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
        rows = fetch_until(cur, after_snapshot)
        resume_at = 0
        for i, status in enumerate(["picking", "out_for_delivery", "delivered"]):
            set_status(mzemu, f"order:FM-{1001 + i}", status)
            seen = len(rows)

            def closed(all_rows: list[Row], seen: int = seen) -> bool:
                return closed_after(all_rows[seen:], lambda _r: True)

            fetch_more(cur, rows, closed)
            if i == 0:
                resume_at = frontier(rows)  # F: everything below it was delivered
        end = frontier(rows)
        conn.rollback()
        expected = sorted(r for r in data(rows) if resume_at <= r[0] < end)
        assert len(expected) == 4  # the second and third status changes
        cur.execute(
            f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT = false) "
            f"AS OF {resume_at - 1}"
        )
        resumed = fetch_until(cur, lambda r: frontier(r) >= end)
        assert resumed[0][:2] == (resume_at - 1, True)
        assert sorted(r for r in data(resumed) if r[0] < end) == expected


def test_a_change_is_never_stamped_before_it_was_written(mzemu: Emulator) -> None:
    # Materialize timestamps a write after it happened upstream. Writes land at
    # every phase of the 25 ms tick; each one's timestamp must not be below
    # PostgreSQL's clock at the transaction's last statement (its commit came after).
    with mzemu.connect(autocommit=True) as conn:
        row = conn.execute("SELECT mz_now()::text").fetchone()
        assert row is not None
        start = int(str(row[0]))
    written_ms: dict[str, float] = {}
    with mzemu.pg() as pg:
        for n in range(150):
            status = f"s{n}"
            with pg.transaction():
                pg.execute(
                    "DELETE FROM triples "
                    "WHERE subject_id = 'order:FM-1001' AND predicate = 'order_status'"
                )
                pg.execute(
                    "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
                    "VALUES ('order:FM-1001', 'order_status', %s, 'string')",
                    (status,),
                )
                clock = pg.execute(
                    "SELECT extract(epoch FROM clock_timestamp())::float8 * 1000"
                ).fetchone()
                assert clock is not None
                written_ms[status] = float(str(clock[0]))
            time.sleep((n % 7) * 0.004)
    last = max(written_ms.values())
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(
            f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT = false) AS OF {start}"
        )
        rows = fetch_until(cur, lambda r: frontier(r) > last + 1000)
        conn.rollback()
    # writes inside one tick consolidate: only the tick's last status shows
    stamped = {r[5]: r[0] for r in data(rows) if r[2] == 1 and r[3] == "order:FM-1001"}
    assert "s149" in stamped and len(stamped) >= 50 and set(stamped) <= set(written_ms)
    early = {s: (ts, written_ms[s]) for s, ts in stamped.items() if ts < written_ms[s]}
    assert not early, f"stamped before they were written (ts, written ms): {early}"


def test_as_of_below_retained_history_fails_and_at_least_moves_forward(mzemu: Emulator) -> None:
    since = mzemu.admin("mzemu_since()")
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF {since - 1}")
        with pytest.raises(psycopg.errors.DataException) as info:
            cur.execute("FETCH ALL c")
        assert info.value.sqlstate == "22000"
        assert info.value.diag.message_primary == "could not find a valid timestamp for the query"
        assert (info.value.diag.message_detail or "").startswith("Constraints:")
        conn.rollback()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS) AS OF AT LEAST 1")
        cur.execute("FETCH 1 c")
        first = cur.fetchone()
        assert first is not None and first[1] is True and int(str(first[0])) == since
        conn.rollback()
        # After compaction only the newest time is readable.
        compacted = mzemu.admin("mzemu_compact()")
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF {compacted - 1}")
        with pytest.raises(psycopg.errors.DataException, match="could not find a valid timestamp"):
            cur.execute("FETCH ALL c")
    with mzemu.connect(autocommit=True) as conn, conn.cursor() as cur:  # noqa: SIM117
        with pytest.raises(psycopg.errors.DataException, match="could not find a valid timestamp"):
            with cur.copy(f"COPY (SUBSCRIBE {VIEW} AS OF 1) TO STDOUT") as copy:
                copy.read()


def test_up_to_bounds(mzemu: Emulator) -> None:
    now = mzemu.admin("mzemu_frontier()") - 1
    with mzemu.connect() as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF {now} UP TO {now}")
        cur.execute("FETCH ALL c")
        assert cur.fetchall() == []
        assert any("is guaranteed to be empty" in n for n in notices)
        conn.rollback()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF {now} UP TO {now - 1}")
        with pytest.raises(psycopg.errors.DataException, match=r"lower bound \(`AS OF`\)"):
            cur.execute("FETCH ALL c")
        conn.rollback()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} AS OF {now} UP TO {now + 1}")
        cur.execute("FETCH ALL c")  # the snapshot, then the subscription ends by itself
        assert len(cur.fetchall()) == 3
        cur.execute("FETCH ALL c")
        assert cur.fetchall() == []


# --- FETCH ---------------------------------------------------------------------------------


def test_fetch_without_timeout_blocks_until_rows_exist(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        cur.execute("FETCH ALL c")
        assert len(cur.fetchall()) == 3
        result: list[Row] = []
        done = threading.Event()

        def blocked_fetch() -> None:
            cur.execute("FETCH ALL c")
            result.extend(cur.fetchall())
            done.set()

        thread = threading.Thread(target=blocked_fetch)
        thread.start()
        assert not done.wait(0.3), "FETCH returned although nothing changed"
        set_status(mzemu, "order:FM-1003", "picking")
        thread.join(DEADLINE_S)
        assert done.is_set()
        assert sorted(int(r[1]) for r in result) == [-1, 1]


def test_fetch_with_timeout_returns_empty_when_nothing_is_ready(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        cur.execute("FETCH ALL c WITH (timeout = '0s')")
        assert len(cur.fetchall()) == 3
        cur.execute("FETCH ALL c WITH (timeout = '100ms')")
        assert cur.fetchall() == []
        assert cur.statusmessage == "FETCH 0"
        cur.execute("FETCH 2 c WITH (timeout = '0s')")
        assert cur.fetchall() == []


def test_fetch_count_defaults_to_one(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        cur.execute("FETCH c")
        assert len(cur.fetchall()) == 1
        cur.execute("FETCH 5 c WITH (timeout = '0s')")
        assert len(cur.fetchall()) == 2


def test_cancel_interrupts_a_blocked_fetch(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        cur.execute("FETCH ALL c")
        outcome: list[BaseException] = []

        def blocked_fetch() -> None:
            try:
                cur.execute("FETCH ALL c")
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked_fetch)
        thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
            conn.cancel_safe()
        thread.join(1)
        assert outcome and isinstance(outcome[0], pgerrors.QueryCanceled)
        assert outcome[0].sqlstate == "57014"
        assert outcome[0].diag.message_primary == "canceling statement due to user request"
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_two_subscriptions_see_identical_timestamps(mzemu: Emulator) -> None:
    with mzemu.connect() as a, mzemu.connect() as b:
        cur_a, cur_b = a.cursor(), b.cursor()
        for cur in (cur_a, cur_b):
            cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT = false)")
        rows_a = fetch_until(cur_a, after_snapshot)
        rows_b = fetch_until(cur_b, after_snapshot)
        for i, status in enumerate(["picking", "delivered", "cancelled"]):
            set_status(mzemu, f"order:FM-{1001 + i}", status)
        target = 0
        for got, cur in ((rows_a, cur_a), (rows_b, cur_b)):
            fetch_more(cur, got, lambda r: len(data(r)) >= 6)
            target = max(target, max(r[0] for r in data(got)) + 1)
        for got, cur in ((rows_a, cur_a), (rows_b, cur_b)):
            fetch_more(cur, got, lambda r: frontier(r) >= target)
    common = min(frontier(rows_a), frontier(rows_b))
    start = max(rows_a[0][0], rows_b[0][0])

    def view(rows: list[Row]) -> tuple[list[Row], list[int]]:
        changes = sorted((r[0], r[2], r[3], r[5]) for r in data(rows) if r[0] < common)
        progress = sorted(r[0] for r in rows if r[1] and start < r[0] <= common)
        return changes, progress

    assert view(rows_a) == view(rows_b)
    assert len(view(rows_a)[0]) == 6


# --- ENVELOPE UPSERT -----------------------------------------------------------------------


def test_envelope_upsert_states(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(
            f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} ENVELOPE UPSERT (KEY (order_id)) "
            "WITH (PROGRESS)"
        )
        rows = fetch_until(cur, after_snapshot)
        assert cur.description is not None
        names = [d.name for d in cur.description]
        assert names[:5] == [
            "mz_timestamp",
            "mz_progressed",
            "mz_state",
            "order_id",
            "order_number",
        ]
        snapshot = data(rows)
        assert sorted((r[2], r[3]) for r in snapshot) == [
            ("upsert", f"order:FM-{n}") for n in (1001, 1002, 1003)
        ]
        seen = len(rows)
        set_status(mzemu, "order:FM-1001", "picking")
        with mzemu.pg() as pg:
            pg.execute("DELETE FROM triples WHERE subject_id = 'order:FM-1002'")
            # A new order with two delivery tasks appears with two live rows for one
            # key at one timestamp: Materialize reports a key violation.
            pg.execute(
                "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
                "('order:FM-2000', 'order_number', 'FM-2000', 'string'), "
                "('order:FM-2000', 'placed_by', 'customer:C-1', 'entity_ref'), "
                "('order:FM-2000', 'order_store', 'store:S-1', 'entity_ref'), "
                "('task:T-FM-2000', 'task_of_order', 'order:FM-2000', 'entity_ref'), "
                "('task:T2-FM-2000', 'task_of_order', 'order:FM-2000', 'entity_ref')"
            )
        fetch_more(cur, rows, lambda r: len(data(r[seen:])) >= 3)
    changes = {r[3]: r for r in data(rows[seen:])}
    assert changes["order:FM-1001"][2] == "upsert"
    assert changes["order:FM-1001"][5] == "picking"
    assert changes["order:FM-1002"][2] == "delete"
    assert all(v is None for v in changes["order:FM-1002"][4:])
    assert changes["order:FM-2000"][2] == "key_violation"
    assert all(v is None for v in changes["order:FM-2000"][4:])


# --- failure modes -------------------------------------------------------------------------


def test_client_that_does_not_fetch_falls_behind() -> None:
    schema = create_schema(orders=3)
    emu = start_emulator(schema, env={"MZEMU_MAX_BUFFERED_BYTES": "4096"})
    try:
        with emu.connect() as conn:
            cur = conn.cursor()
            cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
            cur.execute("FETCH 1 c")  # starts the subscription
            for _ in range(8):  # each tick queues a progress message of at least 1 KiB
                emu.admin("mzemu_tick()")
            with pytest.raises(pgerrors.OutOfMemory) as info:
                cur.execute("FETCH ALL c")
        assert info.value.sqlstate == "53200"
        assert (info.value.diag.message_primary or "").startswith(
            "SUBSCRIBE fell behind: the client did not read results fast enough"
        )
        assert "4.0 KiB budget" in (info.value.diag.message_primary or "")
    finally:
        emu.close()
        drop_schema(schema)


def test_idle_transaction_is_terminated(mzemu: Emulator) -> None:
    conn = mzemu.connect(autocommit=True)
    try:
        conn.execute("SET idle_in_transaction_session_timeout = '200ms'")
        conn.autocommit = False
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
        time.sleep(0.8)
        with pytest.raises(pgerrors.IdleInTransactionSessionTimeout) as info:
            cur.execute("FETCH ALL c")
        assert info.value.sqlstate == "25P03"
        assert (
            info.value.diag.message_primary
            == "terminating connection due to idle-in-transaction timeout"
        )
        assert conn.closed or conn.broken
    finally:
        conn.close()


def test_idle_timeout_default_comes_from_the_environment() -> None:
    schema = create_schema(orders=1)
    emu = start_emulator(schema, env={"MZEMU_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS": "150"})
    try:
        with emu.connect() as conn:
            assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("150ms",)
            time.sleep(0.6)
            with pytest.raises(pgerrors.IdleInTransactionSessionTimeout):
                conn.execute("SELECT 1")
    finally:
        emu.close()
        drop_schema(schema)


def test_dropping_the_view_terminates_subscriptions(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS)")
        fetch_until(cur, after_snapshot)
        with mzemu.pg() as pg:
            pg.execute(f"DROP VIEW {VIEW}")
        with pytest.raises(pgerrors.InternalError_) as info:
            fetch_until(cur, lambda _rows: False)
        assert info.value.sqlstate == "XX000"
        assert info.value.diag.message_primary == (
            "subscribe has been terminated because underlying relation "
            f'"materialize.public.{VIEW}" was dropped'
        )
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedTable, match=f"unknown catalog item '{VIEW}'"):
            cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW}")
