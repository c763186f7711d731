"""consumer/bulk.py: NDJSON body built around unparsed document bytes; response reading."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import Change
from searchsync.consumer.bulk import (
    BulkResponseError,
    ItemResult,
    action_line,
    decode_response,
    encode_body,
    unsendable_reason,
)

json_docs = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), st.none()),
    max_size=6,
).map(msgspec.json.encode)
utf8_keys = st.text(min_size=1, max_size=60).map(str.encode).filter(lambda k: len(k) <= 512)
changes = st.builds(
    Change,
    ts=st.integers(min_value=0, max_value=2**62),
    key=utf8_keys,
    doc=st.one_of(st.none(), json_docs),
)


@given(st.lists(changes, max_size=30))
def test_body_is_ndjson_with_external_gte_versions(batch: list[Change]) -> None:
    body = encode_body(batch)
    lines = body.split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    lines = lines[:-1]
    for change in batch:
        action = json.loads(lines.pop(0))
        (op,) = action
        meta = action[op]
        assert meta == {
            "_id": change.key.decode(),
            "version": change.ts,
            "version_type": "external_gte",
        }
        if change.doc is None:
            assert op == "delete"
        else:
            assert op == "index"
            assert lines.pop(0) == change.doc  # copied byte for byte, not re-encoded
    assert lines == []


def test_action_line_fast_path_and_escaping() -> None:
    plain = action_line(Change(7, b"order:FM-1", None))
    assert plain == b'{"delete":{"_id":"order:FM-1","version":7,"version_type":"external_gte"}}\n'
    tricky = action_line(Change(7, 'a"b\\c\u00e9\n'.encode(), b"{}"))
    assert json.loads(tricky)["index"]["_id"] == 'a"b\\c\u00e9\n'


def test_document_bytes_are_not_parsed() -> None:
    # not even valid JSON: the consumer must not look inside (OpenSearch will judge it)
    body = encode_body([Change(1, b"k", b"{not json")])
    assert body.endswith(b"\n{not json\n")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (Change(1, b"k", b'{"a":"x\ny"}'), "raw newline"),
        (Change(1, b"k", b""), "empty"),
        (Change(1, b"\xff\xfe", None), "UTF-8"),
        (Change(1, b"k" * 513, None), "at most 512"),
    ],
)
def test_unsendable_changes(change: Change, reason: str) -> None:
    problem = unsendable_reason(change)
    assert problem is not None and reason in problem


@given(changes)
def test_generated_changes_are_sendable(change: Change) -> None:
    assert unsendable_reason(change) is None


def test_response_without_errors_is_all_applied() -> None:
    payload = {"errors": False, "items": [{"index": {"status": 201}}, {"delete": {"status": 404}}]}
    assert decode_response(payload, 2) == [ItemResult(200), ItemResult(200)]
    assert decode_response(msgspec.json.encode(payload), 2) == [ItemResult(200), ItemResult(200)]


def test_response_with_errors_keeps_type_and_reason() -> None:
    payload = {
        "errors": True,
        "items": [
            {"index": {"status": 201}},
            {
                "index": {
                    "status": 400,
                    "error": {"type": "mapper_parsing_exception", "reason": "bad"},
                }
            },
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        ],
    }
    assert decode_response(payload, 3) == [
        ItemResult(201),
        ItemResult(400, "mapper_parsing_exception", "bad"),
        ItemResult(429, "es_rejected_execution_exception", ""),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"errors": False, "items": [{"index": {"status": 201}}]},  # one item for two actions
        {"errors": True},
        b"not json",
        {"errors": True, "items": [{"index": {"status": 201}, "delete": {"status": 200}}] * 2},
    ],
)
def test_unreadable_responses_raise(payload: object) -> None:
    with pytest.raises(BulkResponseError):
        decode_response(payload, 2)  # type: ignore[arg-type]
