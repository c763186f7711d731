"""consumer/outcomes.py: per-item classification and the retry / dead-letter policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.bulk import ItemResult
from searchsync.consumer.outcomes import (
    Outcome,
    RequestVerdict,
    RetryPolicy,
    Verdict,
    classify,
    classify_request,
    judge,
)

POLICY = RetryPolicy(max_deliveries=3, initial_backoff=1, max_backoff=30, multiplier=2)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (ItemResult(201), Outcome.APPLIED),
        (ItemResult(200), Outcome.APPLIED),
        (ItemResult(404), Outcome.APPLIED),  # delete: not_found
        (ItemResult(409, "version_conflict_engine_exception"), Outcome.APPLIED),
        (ItemResult(429, "es_rejected_execution_exception"), Outcome.THROTTLED),
        (ItemResult(429, "cluster_block_exception"), Outcome.THROTTLED),
        (ItemResult(403, "cluster_block_exception"), Outcome.THROTTLED),
        (ItemResult(404, "index_not_found_exception"), Outcome.LAYOUT),
        (
            ItemResult(400, "illegal_argument_exception", "no write index is defined for alias"),
            Outcome.LAYOUT,
        ),
        (
            ItemResult(403, "security_exception", "no permissions for [indices:data/write]"),
            Outcome.BLOCKED,
        ),
        (ItemResult(401, "security_exception"), Outcome.BLOCKED),
        (ItemResult(503, "unavailable_shards_exception"), Outcome.THROTTLED),
        (ItemResult(500, "exception"), Outcome.FAILED),
        (ItemResult(504), Outcome.FAILED),
        (ItemResult(408), Outcome.FAILED),
        (ItemResult(400, "mapper_parsing_exception"), Outcome.REJECTED),
        (ItemResult(400, "illegal_argument_exception"), Outcome.REJECTED),
        (ItemResult(409, "something_else"), Outcome.REJECTED),
        (ItemResult(413), Outcome.REJECTED),
    ],
)
def test_classify(result: ItemResult, outcome: Outcome) -> None:
    assert classify(result) is outcome


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (None, RequestVerdict.PROBE),
        (401, RequestVerdict.BLOCKED),
        (403, RequestVerdict.BLOCKED),
        (404, RequestVerdict.BLOCKED),
        (429, RequestVerdict.RETRY),
        (500, RequestVerdict.RETRY),
        (503, RequestVerdict.RETRY),
        (408, RequestVerdict.RETRY),
        (400, RequestVerdict.SPLIT),
        (413, RequestVerdict.SPLIT),
    ],
)
def test_classify_request(status: int | None, verdict: RequestVerdict) -> None:
    assert classify_request(status) is verdict


deliveries = st.integers(min_value=1, max_value=100)


@given(deliveries)
def test_throttling_never_dead_letters(delivered: int) -> None:
    assert POLICY.verdict(Outcome.THROTTLED, delivered) is Verdict.RETRY


def test_tls_failures_block_and_are_never_split() -> None:
    assert classify_request(None, tls=True) is RequestVerdict.BLOCKED


@given(deliveries)
def test_a_layout_problem_stops_the_consumer(delivered: int) -> None:
    assert POLICY.verdict(Outcome.LAYOUT, delivered) is Verdict.FATAL


@given(deliveries)
def test_failures_dead_letter_at_max_deliveries(delivered: int) -> None:
    expected = Verdict.DEAD_LETTER if delivered >= POLICY.max_deliveries else Verdict.RETRY
    assert POLICY.verdict(Outcome.FAILED, delivered) is expected


@given(deliveries)
def test_applied_acks_and_rejected_dead_letters_at_once(delivered: int) -> None:
    assert POLICY.verdict(Outcome.APPLIED, delivered) is Verdict.ACK
    assert POLICY.verdict(Outcome.REJECTED, delivered) is Verdict.DEAD_LETTER


def test_backoff_follows_retry_settings() -> None:
    backoff = POLICY.backoff()
    nominal = []
    for _ in range(7):
        nominal.append(backoff.nominal())
        backoff.next_delay()
    assert nominal == [1, 2, 4, 8, 16, 30, 30]


statuses = st.sampled_from(
    [
        ItemResult(201),
        ItemResult(404),
        ItemResult(409, "version_conflict_engine_exception"),
        ItemResult(429, "es_rejected_execution_exception"),
        ItemResult(500, "exception", "boom"),
        ItemResult(400, "mapper_parsing_exception", "failed to parse"),
    ]
)


@given(st.lists(st.tuples(statuses, deliveries), max_size=40))
def test_judge_sorts_every_item_once(rows: list[tuple[ItemResult, int]]) -> None:
    items = list(range(len(rows)))
    results = [r for r, _ in rows]
    delivered = [d for _, d in rows]
    out = judge(items, delivered, results, POLICY)
    assert sorted(out.applied + out.retry + out.dead) == items
    assert set(out.charged) <= set(out.retry)
    assert len(out.reasons) == len(out.dead)
    for item in out.charged:
        assert classify(results[item]) is Outcome.FAILED
    errors = sum(classify(r) is not Outcome.APPLIED for r in results)
    assert out.throttled + out.failed + out.rejected == errors
    assert bool(out.first_error) == bool(errors)


def test_judge_reasons_name_the_error() -> None:
    out = judge(
        ["a", "b"],
        [1, 3],
        [ItemResult(400, "mapper_parsing_exception", "bad float"), ItemResult(500, "x", "boom")],
        POLICY,
    )
    assert out.dead == ["a", "b"]
    assert out.reasons[0] == "400 mapper_parsing_exception: bad float"
    assert out.reasons[1] == "gave up after 3 attempts: 500 x: boom"
