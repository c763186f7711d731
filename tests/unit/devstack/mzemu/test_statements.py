"""The emulator's statement parser: Materialize's SUBSCRIBE/FETCH/DECLARE grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.mzemu.errors import MzError
from devstack.mzemu.statements import (
    Admin,
    Begin,
    Close,
    Commit,
    CopySubscribe,
    Declare,
    Fetch,
    MzNow,
    PassThrough,
    ResetVar,
    Rollback,
    SetVar,
    ShowVar,
    Subscribe,
    TimestampExpr,
    parse_interval_ms,
    parse_statement,
    split_statements,
)


def sub(sql: str) -> Subscribe:
    stmt = parse_statement(sql)
    assert isinstance(stmt, Subscribe)
    return stmt


def test_split_respects_quotes_comments_and_parentheses() -> None:
    sql = (
        "SET CLUSTER = serving; SELECT ';' AS x; -- a ; comment\n"
        'SELECT $$a;b$$, "we;ird" FROM t /* ; */; ; COPY (SELECT 1; ) TO STDOUT'
    )
    assert split_statements(sql) == [
        "SET CLUSTER = serving",
        "SELECT ';' AS x",
        '-- a ; comment\nSELECT $$a;b$$, "we;ird" FROM t /* ; */',
        "COPY (SELECT 1; ) TO STDOUT",
    ]
    assert split_statements("  ;; -- nothing\n") == []


@given(st.lists(st.sampled_from(["SELECT 1", "BEGIN", "FETCH ALL c", "SELECT 'a;b'"]), max_size=6))
def test_split_round_trips_joined_statements(stmts: list[str]) -> None:
    assert split_statements("; ".join(stmts)) == stmts


def test_unterminated_literal_is_a_syntax_error() -> None:
    with pytest.raises(MzError) as info:
        split_statements("SELECT 'oops")
    assert info.value.sqlstate == "42601"


def test_subscribe_defaults() -> None:
    s = sub("SUBSCRIBE orders_search_source_mv")
    assert s == Subscribe("orders_search_source_mv", "", snapshot=True, progress=False)
    assert sub("SUBSCRIBE TO materialize.public.Orders").relation == "orders"
    assert sub('SUBSCRIBE "MixedCase"').relation == "MixedCase"


def test_subscribe_with_options_in_any_order_inside_with() -> None:
    a = sub("SUBSCRIBE v WITH (PROGRESS, SNAPSHOT = false)")
    b = sub("SUBSCRIBE v WITH (SNAPSHOT false, PROGRESS = true)")
    assert a == b
    assert a.progress and not a.snapshot
    assert sub("SUBSCRIBE v WITH (SNAPSHOT = 'off')").snapshot is False


def test_subscribe_as_of_up_to_and_envelope() -> None:
    s = sub("SUBSCRIBE v ENVELOPE UPSERT (KEY (order_id)) WITH (PROGRESS) AS OF 41 UP TO 99")
    assert s.upsert_key == ("order_id",)
    assert s.as_of is not None and s.as_of.evaluate(0) == 41 and not s.as_of_at_least
    assert s.up_to is not None and s.up_to.evaluate(0) == 99
    at_least = sub("SUBSCRIBE v AS OF AT LEAST mz_now() - 5")
    assert at_least.as_of_at_least
    assert at_least.as_of is not None and at_least.as_of.evaluate(100) == 95
    # Materialize still accepts the output clause at the end.
    assert sub("SUBSCRIBE v WITH (PROGRESS) AS OF 1 ENVELOPE UPSERT (KEY (a, b))").upsert_key == (
        "a",
        "b",
    )
    query = sub("SUBSCRIBE (SELECT a, b FROM t WHERE x = ';') WITH (PROGRESS)")
    assert query.query == "SELECT a, b FROM t WHERE x = ';'" and query.relation == ""


def test_subscribe_clauses_follow_materialize_order() -> None:
    with pytest.raises(MzError, match="end of statement"):
        parse_statement("SUBSCRIBE v AS OF 5 WITH (PROGRESS)")
    with pytest.raises(MzError, match="one of PROGRESS or SNAPSHOT"):
        parse_statement("SUBSCRIBE v WITH (FANCY)")
    with pytest.raises(MzError, match="more than once"):
        parse_statement("SUBSCRIBE v WITH (PROGRESS, PROGRESS)")
    with pytest.raises(MzError) as info:
        parse_statement("SUBSCRIBE v ENVELOPE DEBEZIUM (KEY (a))")
    assert info.value.sqlstate == "0A000"


def test_timestamp_expressions() -> None:
    expr = sub("SUBSCRIBE v AS OF $1").as_of
    assert expr is not None
    assert expr.evaluate(0, ("123",)) == 123
    with pytest.raises(MzError):
        expr.evaluate(0, ())
    assert TimestampExpr(((1, "int", "10"), (-1, "now", ""))).evaluate(3) == 7
    with pytest.raises(MzError, match="out of range"):
        TimestampExpr(((-1, "int", "1"),)).evaluate(0)
    assert sub("SUBSCRIBE v AS OF '17'::mz_timestamp").as_of == TimestampExpr(((1, "int", "17"),))


def test_declare_fetch_close() -> None:
    declare = parse_statement("DECLARE c CURSOR FOR SUBSCRIBE v WITH (PROGRESS)")
    assert isinstance(declare, Declare) and declare.subscribe is not None
    assert declare.subscribe.progress
    plain = parse_statement("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1")
    assert isinstance(plain, Declare) and plain.subscribe is None and plain.sql == "SELECT 1"
    assert parse_statement("FETCH c") == Fetch("c", 1, None)
    assert parse_statement("FETCH 100 c WITH (timeout='1s')") == Fetch("c", 100, 1000.0)
    assert parse_statement("FETCH ALL FROM c WITH (TIMEOUT = '0s')") == Fetch("c", None, 0.0)
    assert parse_statement("FETCH FORWARD 5 IN c") == Fetch("c", 5, None)
    assert parse_statement("CLOSE c") == Close("c")
    assert parse_statement("CLOSE ALL") == Close(None)


def test_transaction_and_variables() -> None:
    assert parse_statement("BEGIN") == Begin()
    assert parse_statement("START TRANSACTION READ ONLY") == Begin()
    assert parse_statement("COMMIT") == Commit()
    assert parse_statement("ROLLBACK") == Rollback()
    assert isinstance(parse_statement("ROLLBACK TO SAVEPOINT s"), PassThrough)
    assert parse_statement("SET CLUSTER = serving") == SetVar("cluster", "serving")
    assert parse_statement("SET cluster TO 'serving'") == SetVar("cluster", "serving")
    assert parse_statement("SET cluster = DEFAULT") == SetVar("cluster", None)
    assert parse_statement("SET SESSION TIME ZONE 'UTC'") == SetVar("timezone", "UTC")
    assert parse_statement("SET search_path = a, b") == SetVar("search_path", "a, b")
    assert parse_statement("RESET cluster") == ResetVar("cluster")
    assert parse_statement("SHOW CLUSTER") == ShowVar("cluster")
    assert parse_statement("SHOW TRANSACTION ISOLATION LEVEL") == ShowVar("transaction_isolation")


def test_mz_now_admin_copy_and_pass_through() -> None:
    assert parse_statement("SELECT mz_now()") == MzNow(False, "mz_now")
    assert parse_statement("select mz_now()::text AS t") == MzNow(True, "t")
    assert parse_statement("SELECT mzemu_pause_ticks(250)") == Admin("mzemu_pause_ticks", ("250",))
    copy = parse_statement("COPY (SUBSCRIBE v WITH (PROGRESS)) TO STDOUT (FORMAT binary)")
    assert isinstance(copy, CopySubscribe) and copy.binary and copy.subscribe.progress
    assert isinstance(parse_statement("COPY (SUBSCRIBE v) TO STDOUT"), CopySubscribe)
    for sql in ("SELECT count(*) FROM v", "COPY (SELECT 1) TO STDOUT", "SELECT mzemu_nope()"):
        assert parse_statement(sql) == PassThrough(sql)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1s", 1000.0), ("250ms", 250.0), ("0s", 0.0), ("1 minute", 60_000.0), ("2", 2000.0),
     ("1.5 seconds", 1500.0), ("00:00:03", 3000.0), ("1min 30s", 90_000.0)],
)  # fmt: skip
def test_interval_literals(text: str, ms: float) -> None:
    assert parse_interval_ms(text) == ms


def test_bad_interval() -> None:
    with pytest.raises(MzError) as info:
        parse_interval_ms("soon")
    assert info.value.sqlstate == "22007"
