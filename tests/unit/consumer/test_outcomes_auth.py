"""Auth and permission failures are the cluster's answer, not the document's.

A rotated OS_PASSWORD (401 for every request), a role without bulk rights (403,
for the request or per item) or a proxy answering 404 for the request must never
dead-letter a change: the consumer retries with backoff until it goes away. Only
per-item rejections of the document itself (400 mapping errors …) are dead letters.
Pure: the policy of consumer/outcomes.py, applied as the runner applies it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.consumer.bulk import ItemResult
from searchsync.consumer.outcomes import (
    RequestVerdict,
    RetryPolicy,
    Verdict,
    classify,
    classify_request,
)

POLICY = RetryPolicy(max_deliveries=3, initial_backoff=1, max_backoff=30, multiplier=2)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_whole_request_refused_for_auth_or_endpoint_is_never_split(status: int) -> None:
    # a split ends with single items, and a refused single item was dead-lettered
    assert classify_request(status) is not RequestVerdict.SPLIT


@given(
    st.sampled_from(
        [
            ItemResult(401, "security_exception", "Unauthorized"),
            ItemResult(403, "security_exception", "no permissions for [indices:data/write/bulk]"),
            ItemResult(403, "", "forbidden"),
        ]
    ),
    st.integers(1, 1000),
)
def test_per_item_auth_refusals_are_retried_forever(result: ItemResult, attempts: int) -> None:
    assert POLICY.verdict(classify(result), attempts) is Verdict.RETRY


def test_a_document_the_mapping_rejects_is_still_dead_lettered() -> None:
    result = ItemResult(400, "mapper_parsing_exception", "failed to parse field [delivery_eta]")
    assert POLICY.verdict(classify(result), 1) is Verdict.DEAD_LETTER
