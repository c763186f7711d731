"""producer/subscribe.py: the SUBSCRIBE and FETCH statements as Materialize documents them."""

from __future__ import annotations

from producer.subscribe import CURSOR, declare_statement, fetch_statement


def test_declare_with_snapshot() -> None:
    text = declare_statement(
        "orders_search_source_mv",
        as_of=None,
        snapshot=True,
        envelope="diffs",
        key_column="order_id",
    ).as_string(None)
    assert text == (
        f'DECLARE "{CURSOR}" CURSOR FOR SUBSCRIBE (SELECT * FROM "orders_search_source_mv") '
        "WITH (PROGRESS, SNAPSHOT = true)"
    )


def test_declare_resume_upsert_envelope() -> None:
    text = declare_statement(
        "orders_search_source_mv",
        as_of=1699999999999,
        snapshot=False,
        envelope="upsert",
        key_column="order_id",
    ).as_string(None)
    assert text.endswith(
        'ENVELOPE UPSERT (KEY ("order_id")) WITH (PROGRESS, SNAPSHOT = false) AS OF 1699999999999'
    )


def test_fetch_has_a_count_and_no_timeout() -> None:
    assert fetch_statement(5000).as_string(None) == f'FETCH 5000 "{CURSOR}"'
