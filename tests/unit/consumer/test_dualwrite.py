"""consumer/dualwrite.py merge: an item's outcome is the worse of both indexes' answers.

Pure (the DualWrite watch itself runs in tests/e2e/test_resync.py against real
Redis and OpenSearch).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.bulk import ItemResult
from searchsync.consumer.dualwrite import merge
from searchsync.consumer.outcomes import Outcome, classify

TARGET = "orders_resync"
OK = ItemResult(201)
CONFLICT = ItemResult(409, "version_conflict_engine_exception", "newer")
REJECTED = ItemResult(400, "mapper_parsing_exception", "failed to parse field [x]")
FAILED = ItemResult(500, "internal", "boom")
THROTTLED = ItemResult(429, "es_rejected_execution_exception", "queue full")
AUTH = ItemResult(403, "security_exception", "no rights")
GONE = ItemResult(
    404,
    "index_not_found_exception",
    f"no such index [{TARGET}] and [require_alias] request flag is [true] and [{TARGET}] "
    f"is not an alias",
)
GONE_DELETE = ItemResult(404, "index_not_found_exception", f"no such index [{TARGET}]")


def test_both_applied_is_the_live_answer() -> None:
    assert merge([OK, CONFLICT], [CONFLICT, OK], TARGET) == [OK, CONFLICT]


def test_a_rejection_by_the_new_index_alone_is_a_dead_letter_naming_it() -> None:
    (result,) = merge([OK], [REJECTED], TARGET)
    assert classify(result) is Outcome.REJECTED
    assert result.reason.startswith(f"new index {TARGET} (resync): failed to parse")


def test_a_failure_of_either_index_is_retried() -> None:
    assert [classify(r) for r in merge([OK, FAILED], [THROTTLED, OK], TARGET)] == [
        Outcome.THROTTLED,
        Outcome.FAILED,
    ]
    # retrying beats dead-lettering: the live index may take the document next time
    assert classify(merge([REJECTED], [FAILED], TARGET)[0]) is Outcome.FAILED


def test_a_target_that_is_gone_counts_as_applied_never_as_a_layout_problem() -> None:
    assert merge([OK, OK], [GONE, GONE_DELETE], TARGET) == [OK, OK]
    # the live index's own layout problem still stops the consumer
    live_gone = ItemResult(404, "index_not_found_exception", "no such index [orders]")
    assert classify(merge([live_gone], [OK], TARGET)[0]) is Outcome.LAYOUT


_ANSWERS = st.sampled_from([OK, CONFLICT, REJECTED, FAILED, THROTTLED, AUTH, GONE])
_RANK = [
    Outcome.APPLIED,
    Outcome.REJECTED,
    Outcome.FAILED,
    Outcome.THROTTLED,
    Outcome.BLOCKED,
    Outcome.LAYOUT,
]


@given(st.lists(st.tuples(_ANSWERS, _ANSWERS), max_size=20))
def test_the_merged_outcome_is_never_better_than_the_live_one(
    pairs: list[tuple[ItemResult, ItemResult]],
) -> None:
    live = [a for a, _ in pairs]
    new = [b for _, b in pairs]
    merged = merge(live, new, TARGET)
    assert len(merged) == len(pairs)
    for mine, out in zip(live, merged, strict=True):
        assert _RANK.index(classify(out)) >= _RANK.index(classify(mine))
