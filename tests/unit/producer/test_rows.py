"""producer/rows.py: SUBSCRIBE rows of both envelopes and progress rows."""

from __future__ import annotations

import pytest

from searchsync.producer.rows import (
    Diff,
    Layout,
    LayoutError,
    Progress,
    Rejected,
    Upsert,
    parse_row,
    parse_rows,
)

VIEW = ["order_id", "order_status", "order_total_amount"]
DIFFS = Layout.from_columns(
    ["mz_timestamp", "mz_progressed", "mz_diff", *VIEW], "diffs", "order_id"
)
UPSERTS = Layout.from_columns(
    ["mz_timestamp", "mz_progressed", "mz_state", *VIEW], "upsert", "order_id"
)


def test_diff_layout_keeps_view_columns_and_key_position() -> None:
    assert DIFFS.columns == tuple(VIEW)
    assert DIFFS.key_index == 3
    status_key = Layout.from_columns(
        ["mz_timestamp", "mz_progressed", "mz_diff", *VIEW], "diffs", "order_status"
    )
    assert status_key.key_index == 4


def test_diff_rows_insert_and_retract() -> None:
    insert = parse_row(DIFFS, ("1700000000001", False, 1, "o1", "OPEN", "12.50"))
    retract = parse_row(DIFFS, ("1700000000001", False, -2, "o1", "OPEN", "12.50"))
    assert insert == Diff(1700000000001, "o1", 1, ("o1", "OPEN", "12.50"))
    assert retract == Diff(1700000000001, "o1", -2, ("o1", "OPEN", "12.50"))


def test_progress_rows_carry_only_the_timestamp() -> None:
    assert parse_row(DIFFS, ("1700000000005", True, None, None, None, None)) == Progress(
        1700000000005
    )
    assert parse_row(UPSERTS, ("7", True, None, None, None, None)) == Progress(7)


def test_timestamp_may_arrive_as_int_or_decimal_text() -> None:
    from decimal import Decimal

    assert parse_row(DIFFS, (12, True, None, None, None, None)) == Progress(12)
    assert parse_row(DIFFS, (Decimal("13"), True, None, None, None, None)) == Progress(13)


def test_upsert_envelope_states() -> None:
    up = parse_row(UPSERTS, ("5", False, "upsert", "o1", "OPEN", "1.00"))
    gone = parse_row(UPSERTS, ("5", False, "delete", "o2", None, None))
    bad = parse_row(UPSERTS, ("5", False, "key_violation", "o3", None, None))
    assert up == Upsert(5, "o1", "upsert", ("o1", "OPEN", "1.00"))
    assert gone == Upsert(5, "o2", "delete", None)
    assert bad == Upsert(5, "o3", "key_violation", None)


def test_upsert_layout_requires_key_first() -> None:
    with pytest.raises(LayoutError, match="key first"):
        Layout.from_columns(
            ["mz_timestamp", "mz_progressed", "mz_state", *VIEW], "upsert", "order_status"
        )


def test_layout_without_progress_column_is_refused() -> None:
    with pytest.raises(LayoutError, match="mz_progressed"):
        Layout.from_columns(["mz_timestamp", "mz_diff", *VIEW], "diffs", "order_id")


def test_layout_without_key_column_is_refused() -> None:
    with pytest.raises(LayoutError, match="customer_id"):
        Layout.from_columns(
            ["mz_timestamp", "mz_progressed", "mz_diff", *VIEW], "diffs", "customer_id"
        )


def test_malformed_rows_are_rejected_and_the_batch_goes_on() -> None:
    rejected: list[Rejected] = []
    events = parse_rows(
        DIFFS,
        [
            ("1", False, 1, None, "OPEN", "1.00"),  # NULL key
            ("1", False, 0, "o1", "OPEN", "1.00"),  # a zero diff never comes from Materialize
            ("x", False, 1, "o2", "OPEN", "1.00"),  # unreadable timestamp
            ("2", False, 1, "o3", "OPEN", "1.00"),
        ],
        rejected,
    )
    assert events == [Diff(2, "o3", 1, ("o3", "OPEN", "1.00"))]
    assert [r.reason for r in rejected] == [
        "key column order_id is NULL",
        "mz_diff is 0, expected a non-zero integer",
        "mz_timestamp 'x' is not an integer",
    ]
    upsert_rejected: list[Rejected] = []
    parse_rows(UPSERTS, [("1", False, "weird", "o1", None, None)], upsert_rejected)
    assert "unknown mz_state" in upsert_rejected[0].reason


def test_non_text_keys_become_text() -> None:
    layout = Layout.from_columns(["mz_timestamp", "mz_progressed", "mz_diff", "id"], "diffs", "id")
    assert parse_row(layout, ("1", False, 1, 42)) == Diff(1, "42", 1, (42,))


def test_a_timestamp_equal_in_value_but_not_an_integer_is_still_rejected() -> None:
    from decimal import Decimal

    rejected: list[Rejected] = []
    progress = (5, True, None, None, None, None)
    events = parse_rows(
        DIFFS, [progress, (5.0, *progress[1:]), (Decimal("5.0"), *progress[1:])], rejected
    )
    assert events == [Progress(5)]
    assert [r.reason for r in rejected] == [
        "mz_timestamp 5.0 is not an integer",
        "mz_timestamp Decimal('5.0') is not an integer",
    ]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("k" * 513, "is 513 bytes, OpenSearch ids are at most 512"),
        ("é" * 257, "is 514 bytes, OpenSearch ids are at most 512"),
    ],
)
def test_a_key_the_codec_cannot_carry_is_rejected_alone_with_its_row(
    key: str, problem: str
) -> None:
    layout = Layout.from_columns(
        ["mz_timestamp", "mz_progressed", "mz_diff", "id", "v"], "diffs", "id"
    )
    rejected: list[Rejected] = []
    events = parse_rows(
        layout,
        [("5", False, 1, "good", "a"), ("5", False, 1, key, "b"), ("5", False, -1, "g2", "c")],
        rejected,
    )
    assert events == [(5, "good", 1, ("good", "a")), (5, "g2", -1, ("g2", "c"))]
    (bad,) = rejected
    assert bad.key == key and bad.ts == 5 and bad.reason == f"key column id {problem}"
    assert bad.row == ("5", False, 1, key, "b")


def test_a_key_of_512_bytes_is_fine() -> None:
    layout = Layout.from_columns(["mz_timestamp", "mz_progressed", "mz_diff", "id"], "diffs", "id")
    rejected: list[Rejected] = []
    assert parse_rows(layout, [("5", False, 1, "é" * 256)], rejected) == [
        (5, "é" * 256, 1, ("é" * 256,))
    ]
    assert rejected == []
