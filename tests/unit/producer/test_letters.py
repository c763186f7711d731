"""producer/letters.py: the producer's dead letters, one wording for SUBSCRIBE and polling."""

from __future__ import annotations

import pytest

from searchsync.common.entries import DELETE, UPSERT, decode_dead_letter, encode_dead_letter
from searchsync.producer.letters import key_violation, oversize, violation_reason


def test_a_key_violation_keeps_the_rows_and_round_trips(caplog: pytest.LogCaptureFixture) -> None:
    reason = violation_reason(2, 17)
    letter = key_violation("v", 17, "order:1", rows=2, reason=reason, doc=b"[{},{}]")
    assert (letter.ts, letter.op, letter.key, letter.source) == (17, UPSERT, b"order:1", "producer")
    assert letter.reason == "key violation: 2 live rows for one key at ts 17"
    assert decode_dead_letter(encode_dead_letter(letter)) == letter
    assert "Key violation in v at ts=17: key order:1 has 2 live rows" in caplog.text


def test_an_oversized_document_is_named_without_its_bytes(caplog: pytest.LogCaptureFixture) -> None:
    letter = oversize(5, "order:2", 2000, 1000)
    assert letter.doc is None and letter.op == UPSERT and letter.op != DELETE
    assert letter.reason == "document is 2000 bytes, more than MAX_DOCUMENT_BYTES=1000"
    assert "Document of key order:2 at ts=5 is 2000 bytes" in caplog.text
