"""common/dlq.py: letters shown safely, ids and times parsed, and the retry decision."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.dlq import (
    Outcome,
    decide,
    entry_time,
    id_after,
    letter_partition,
    letter_row,
    parse_before,
    parse_entry_id,
    read_letter,
    render_letter,
    render_table,
    shown_document,
    unretryable,
)
from searchsync.common.entries import DELETE, UPSERT, DeadLetter, encode_dead_letter
from searchsync.common.partition import partition_of
from searchsync.producer.rows import key_problem

LETTER = DeadLetter(
    ts=1733320000123,
    op=UPSERT,
    key=b"order:FM-1002",
    reason="mapper_parsing_exception: failed to parse field [assigned_courier_id] of type [long]",
    source="p1/1733320000200-0",
    doc=b'{"order_id":"order:FM-1002","assigned_courier_id":"courier:K-7","sync_version":1}',
    deliveries=1,
)


def test_entry_ids_parse_and_anything_else_is_refused() -> None:
    assert parse_entry_id("1733320000000-3") == (1733320000000, 3)
    assert parse_entry_id(" 1733320000000 ") == (1733320000000, 0)
    for bad in ("", "-", "abc", "1-2-3", "1733320000000-", "+1"):
        with pytest.raises(ValueError, match="not a stream entry id"):
            parse_entry_id(bad)


def test_before_takes_an_entry_id_or_an_iso_time_utc_when_naive() -> None:
    assert parse_before("1733320000000-5") == (1733320000000, 5)
    assert parse_before("2024-12-04T13:46:40Z") == (1733320000000, 0)
    assert parse_before("2024-12-04T13:46:40") == (1733320000000, 0)
    assert parse_before("2024-12-04T14:46:40+01:00") == (1733320000000, 0)
    with pytest.raises(ValueError, match=r"neither an ISO time .* nor an entry id"):
        parse_before("yesterday")


def test_entry_time_and_the_id_after() -> None:
    assert entry_time("1733320000123-0") == "2024-12-04T13:46:40.123Z"
    assert id_after((5, 7)) == (5, 8)


def test_a_letters_partition_is_its_keys_else_the_stream_it_came_from() -> None:
    assert letter_partition(LETTER, 8) == partition_of(b"order:FM-1002", 8)
    keyless = DeadLetter(ts=1, op=b"p", key=b"", reason="r", source="p3/1-0")
    assert letter_partition(keyless, 8) == 3
    assert (
        letter_partition(DeadLetter(ts=1, op=b"u", key=b"", reason="r", source="producer"), 8)
        is None
    )


def test_the_table_says_the_total_and_the_order() -> None:
    rows = [letter_row("1733320000200-0", LETTER, 2)]
    lines = render_table("searchsync:v:dlq", rows, total=3)
    assert lines[0] == "searchsync:v:dlq: 3 dead letters (the newest 1, newest first)"
    assert lines[1].split() == ["id", "time", "(UTC)", "part", "ts", "key", "reason"]
    row = lines[2]
    assert row.startswith("1733320000200-0   2024-12-04T13:46:40.200Z ")
    assert f"p{partition_of(LETTER.key, 2)} " in row and " 1733320000123 " in row
    assert "order:FM-1002" in row and row.endswith("…")  # a long reason is cut
    assert render_table("searchsync:v:dlq", [], total=0) == ["searchsync:v:dlq: no dead letters"]
    whole = render_table("d", rows, total=1)[0]
    assert whole == "d: 1 dead letter (newest first)"


def test_show_pretty_prints_json_and_escapes_bytes_that_are_not_utf8() -> None:
    lines = render_letter(letter_row("1733320000200-0", LETTER, 2), LETTER.doc)
    assert "reason      mapper_parsing_exception" in "\n".join(lines)
    start = lines.index(f"document    JSON, {len(LETTER.doc or b'')} bytes:")
    assert json.loads("\n".join(lines[start + 1 :])) == json.loads(LETTER.doc or b"")
    assert '  "assigned_courier_id": "courier:K-7",' in lines
    binary = DeadLetter(ts=1, op=UPSERT, key=b"k\xff", reason="r", source="p0/1-0", doc=b"a\xffb")
    shown = render_letter(letter_row("1-0", binary, 2), binary.doc)
    assert "key         k\\xff" in shown
    assert shown[-2:] == ["document    not JSON, 3 bytes (non-UTF-8 bytes escaped):", "a\\xffb"]
    assert shown_document(None) == ("none", None)


def test_a_json_document_keeps_its_bytes_and_nan_is_not_json() -> None:
    doc = b'{"order_total_amount":7.50,"name":"\\u00e9"}'
    lines = render_letter(letter_row("1-0", LETTER, 2), doc)
    assert '  "order_total_amount": 7.50,' in lines and '  "name": "\\u00e9"' in lines
    kind, value = shown_document(doc)
    assert kind == "json"
    assert msgspec.json.encode({"document": value}) == b'{"document":' + doc + b"}"
    assert shown_document(b'{"a":NaN}') == ("text", '{"a":NaN}')


@given(st.binary(max_size=200))
def test_any_document_is_shown_without_raising(doc: bytes) -> None:
    kind, value = shown_document(doc)
    assert kind in ("json", "text")
    if kind == "text":
        assert isinstance(value, str)
        value.encode()  # printable: no lone surrogates


@given(st.dictionaries(st.binary(max_size=10), st.binary(max_size=20), max_size=8))
def test_any_fields_read_as_a_letter(fields: dict[bytes, bytes]) -> None:
    letter = read_letter(fields)
    assert isinstance(letter.reason, str)


def test_a_well_formed_letter_reads_back_and_a_garbled_one_says_so() -> None:
    assert read_letter(encode_dead_letter(LETTER)) == LETTER
    garbled = read_letter({b"key": b"k", b"ts": b"x"})
    assert garbled.reason.startswith("unreadable letter: ")
    assert garbled.key == b"k" and json.loads(garbled.doc or b"") == {"key": "k", "ts": "x"}


def test_only_a_change_of_a_valid_key_can_be_retried() -> None:
    assert unretryable(LETTER, key_problem) is None
    progress = DeadLetter(ts=9, op=b"p", key=b"", reason="above high water", source="p0/1-0")
    assert "progress entry" in (unretryable(progress, key_problem) or "")
    empty = DeadLetter(ts=9, op=UPSERT, key=b"", reason="r", source="producer")
    assert "is empty" in (unretryable(empty, key_problem) or "")
    latin = DeadLetter(ts=9, op=DELETE, key=b"\xff", reason="r", source="p0/1-0")
    assert "not UTF-8" in (unretryable(latin, key_problem) or "")
    nul = DeadLetter(ts=9, op=UPSERT, key=b"a\x00b", reason="r", source="p0/1-0")
    assert "NUL" in (unretryable(nul, key_problem) or "")


def test_decisions() -> None:
    one = decide(letter_ts=10, docs=[b"{}"], read_ts=12, max_document_bytes=100)
    assert (one.outcome, one.op, one.doc) == (Outcome.RETRIED, UPSERT, b"{}")
    gone = decide(letter_ts=10, docs=[], read_ts=10, max_document_bytes=100)
    assert (gone.outcome, gone.op, gone.doc) == (Outcome.GONE_FROM_VIEW, DELETE, None)
    two = decide(letter_ts=10, docs=[b"{}", b"{}"], read_ts=12, max_document_bytes=100)
    assert two.outcome is Outcome.STILL_BAD and two.op is None
    assert "key violation: 2 live rows" in two.detail
    big = decide(letter_ts=10, docs=[b"x" * 101], read_ts=12, max_document_bytes=100)
    assert big.outcome is Outcome.STILL_BAD and "MAX_DOCUMENT_BYTES=100" in big.detail
    behind = decide(letter_ts=10, docs=[b"{}"], read_ts=9, max_document_bytes=100)
    assert behind.outcome is Outcome.VIEW_BEHIND and behind.op is None


@given(
    st.integers(0, 50),
    st.integers(0, 50),
    st.lists(st.binary(max_size=12), max_size=3),
    st.integers(0, 12),
)
def test_a_letter_goes_exactly_when_a_change_is_written(
    letter_ts: int, read_ts: int, docs: list[bytes], limit: int
) -> None:
    decision = decide(letter_ts=letter_ts, docs=docs, read_ts=read_ts, max_document_bytes=limit)
    assert decision.outcome.removes_letter == (decision.op is not None)
    if decision.op is not None:  # written only from a read at or after the letter
        assert read_ts >= letter_ts and len(docs) <= 1
        assert decision.doc == (docs[0] if docs else None)
