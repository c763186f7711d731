"""What to do with each item after OpenSearch answered: the whole retry policy.

Pure, no I/O. Like dramatiq's Retries middleware, the policy lives in one place
(:class:`RetryPolicy`), and every decision is a function of the answer and how
often the entry has been delivered:

==============  =====================================================  ===========
outcome         answers                                                verdict
==============  =====================================================  ===========
``APPLIED``     200/201 created or updated, 404 delete ``not_found``,  ack
                409 ``version_conflict_engine_exception`` (a newer
                version is already there)
``THROTTLED``   429; 403 ``cluster_block_exception`` (write block,     retry, never
                flood-stage read-only); 404 ``index_not_found``         dead-letter
                (alias being swapped); 503
``FAILED``      500, 502, 504, 408 and other 5xx                        retry until
                                                                        MAX_DELIVERIES
``REJECTED``    400 and other 4xx (mapping and parse errors)            dead-letter
==============  =====================================================  ===========

THROTTLED answers say the cluster is refusing writes for a while, not that the
document is bad, so they do not use up the entry's deliveries: a long overload
must not empty the stream into the dead-letter queue. Failures of the whole
request (no answer, timeout, 429/5xx for the request) are the same kind of thing
and are retried forever with backoff; a whole-request 400/413 cannot be pinned
on one item, so the worker splits the request until it can.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from common.backoff import Backoff
from consumer.bulk import ItemResult

__all__ = [
    "Outcome",
    "RequestVerdict",
    "RetryPolicy",
    "Round",
    "Verdict",
    "classify",
    "classify_request",
    "judge",
]

T = TypeVar("T")

_APPLIED_CONFLICT = "version_conflict_engine_exception"
_THROTTLING_ERRORS = frozenset({"cluster_block_exception", "index_not_found_exception"})


class Outcome(enum.Enum):
    APPLIED = "applied"
    THROTTLED = "throttled"
    FAILED = "failed"
    REJECTED = "rejected"


class Verdict(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


class RequestVerdict(enum.Enum):
    RETRY = "retry"  # back off and send the same request again
    SPLIT = "split"  # send each half on its own, to find the item at fault


def classify(result: ItemResult) -> Outcome:
    """The :class:`Outcome` of one item's status and error type."""
    status, error = result.status, result.error_type
    if 200 <= status < 300:
        return Outcome.APPLIED
    if status == 404 and not error:
        return Outcome.APPLIED  # delete of a document that is not there
    if status == 409 and error == _APPLIED_CONFLICT:
        return Outcome.APPLIED
    if status in (429, 503) or error in _THROTTLING_ERRORS:
        return Outcome.THROTTLED
    if status == 408 or status >= 500:
        return Outcome.FAILED
    return Outcome.REJECTED


def classify_request(status: int | None) -> RequestVerdict:
    """What to do when the request as a whole failed; ``status`` None = no answer."""
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return RequestVerdict.SPLIT
    return RequestVerdict.RETRY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """MAX_DELIVERIES and the RETRY_* backoff, as one value."""

    max_deliveries: int
    initial_backoff: float
    max_backoff: float
    multiplier: float

    def verdict(self, outcome: Outcome, deliveries: int) -> Verdict:
        """``deliveries`` counts the attempt that produced ``outcome`` (1 for a first try)."""
        if outcome is Outcome.APPLIED:
            return Verdict.ACK
        if outcome is Outcome.REJECTED:
            return Verdict.DEAD_LETTER
        if outcome is Outcome.FAILED and deliveries >= self.max_deliveries:
            return Verdict.DEAD_LETTER
        return Verdict.RETRY

    def backoff(self) -> Backoff:
        return Backoff(self.initial_backoff, self.max_backoff, self.multiplier)


@dataclass(slots=True)
class Round(Generic[T]):
    """The items of one request, sorted by verdict; ``reasons`` align with ``dead``."""

    applied: list[T] = field(default_factory=list)
    retry: list[T] = field(default_factory=list)
    # retried items whose failure used up one of their deliveries (FAILED, not THROTTLED)
    charged: list[T] = field(default_factory=list)
    dead: list[T] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    throttled: int = 0
    failed: int = 0
    rejected: int = 0
    first_error: str = ""


def judge(
    items: Sequence[T],
    deliveries: Sequence[int],
    results: Sequence[ItemResult],
    policy: RetryPolicy,
) -> Round[T]:
    """Sort ``items`` (with their delivery counts) by the verdict on their ``results``."""
    out: Round[T] = Round()
    for item, delivered, result in zip(items, deliveries, results, strict=True):
        outcome = classify(result)
        verdict = policy.verdict(outcome, delivered)
        if outcome is not Outcome.APPLIED:
            if outcome is Outcome.THROTTLED:
                out.throttled += 1
            elif outcome is Outcome.FAILED:
                out.failed += 1
            else:
                out.rejected += 1
            if not out.first_error:
                out.first_error = _describe(result)
        if verdict is Verdict.ACK:
            out.applied.append(item)
        elif verdict is Verdict.RETRY:
            out.retry.append(item)
            if outcome is Outcome.FAILED:
                out.charged.append(item)
        else:
            out.dead.append(item)
            reason = _describe(result)
            if outcome is Outcome.FAILED:
                reason = f"gave up after {delivered} deliveries: {reason}"
            out.reasons.append(reason)
    return out


def _describe(result: ItemResult) -> str:
    text = f"{result.status} {result.error_type}".strip()
    return f"{text}: {result.reason}" if result.reason else text
