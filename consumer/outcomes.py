"""What to do with each item after OpenSearch answered: the whole retry policy.

Pure, no I/O. Like dramatiq's Retries middleware, the policy lives in one place
(:class:`RetryPolicy`), and every decision is a function of the answer and how
often the entry has been attempted (consumer.attempts):

==============  =====================================================  ===========
outcome         answers                                                verdict
==============  =====================================================  ===========
``APPLIED``     200/201 created or updated, 404 delete ``not_found``,  ack
                409 ``version_conflict_engine_exception`` (a newer
                version is already there)
``THROTTLED``   429; 403 ``cluster_block_exception`` (write block,     retry, never
                flood-stage read-only); 503                            dead-letter
``BLOCKED``     401, 403 ``security_exception`` and any other 403:     retry, never
                the credentials or the role are wrong, not the         dead-letter
                document (a rotated password, a role without bulk
                rights)
``LAYOUT``      404 ``index_not_found_exception`` and "no write        stop the
                index" answers: the alias is missing, is a concrete    consumer
                index, or has no write index (common.index)            (fatal)
``FAILED``      500, 502, 504, 408 and other 5xx                        retry until
                                                                        MAX_DELIVERIES
``REJECTED``    400 and other 4xx (mapping and parse errors)            dead-letter
==============  =====================================================  ===========

THROTTLED and BLOCKED answers say the cluster refuses writes for a while, not that
the document is bad, so they do not use up the entry's attempts: a long overload
or a rotated password must not empty the stream into the dead-letter queue while
the index goes stale. Failures of the whole request are judged by
:func:`classify_request`: no answer at all is retried (and probed, see
consumer.runner), 401/403/404 and TLS failures block the partition until they
go away, 408/429/5xx are retried, and a 400/413 cannot be pinned on one item,
so the request is split until it can.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from ..common.backoff import Backoff
from .bulk import ItemResult

__all__ = [
    "Blocked",
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

_APPLIED_CONFLICT: Final = "version_conflict_engine_exception"
_THROTTLING_ERRORS: Final = frozenset({"cluster_block_exception"})
_LAYOUT_ERRORS: Final = frozenset({"index_not_found_exception"})
# OpenSearch's answer for an alias over several indexes none of which is the write
# index (an illegal_argument_exception, 400, per item)
_NO_WRITE_INDEX: Final = "no write index is defined for alias"


class Outcome(enum.Enum):
    APPLIED = "applied"
    THROTTLED = "throttled"
    BLOCKED = "blocked"
    LAYOUT = "layout"
    FAILED = "failed"
    REJECTED = "rejected"


class Verdict(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FATAL = "fatal"


class RequestVerdict(enum.Enum):
    RETRY = "retry"  # back off and send the same request again
    PROBE = "probe"  # no answer: retry if OpenSearch is down, else suspect the request
    BLOCKED = "blocked"  # credentials, role or endpoint: back off, never charge the items
    SPLIT = "split"  # send each half on its own, to find the item at fault


class Blocked(enum.Enum):
    """Why writes are blocked, as ``opensearch_sync_errors_total{kind}`` names it."""

    AUTH = "auth"  # 401 / 403: credentials or role
    ENDPOINT = "endpoint"  # 404 for the request: a proxy or a wrong path
    TLS = "tls"  # the TLS handshake failed (certificate, CA, plain text to a TLS port)


def classify(result: ItemResult) -> Outcome:
    """The :class:`Outcome` of one item's status and error type."""
    status, error = result.status, result.error_type
    if 200 <= status < 300:
        return Outcome.APPLIED
    if status == 404 and not error:
        return Outcome.APPLIED  # delete of a document that is not there
    if status == 409 and error == _APPLIED_CONFLICT:
        return Outcome.APPLIED
    if error in _LAYOUT_ERRORS or _NO_WRITE_INDEX in result.reason:
        return Outcome.LAYOUT
    if status in (429, 503) or error in _THROTTLING_ERRORS:
        return Outcome.THROTTLED
    if status in (401, 403):
        return Outcome.BLOCKED
    if status == 408 or status >= 500:
        return Outcome.FAILED
    return Outcome.REJECTED


def classify_request(status: int | None, *, tls: bool = False) -> RequestVerdict:
    """What to do when the request as a whole failed; ``status`` None = no answer
    (``tls``: because the TLS handshake failed)."""
    if tls:
        return RequestVerdict.BLOCKED
    if status is None:
        return RequestVerdict.PROBE
    if status in (401, 403, 404):
        return RequestVerdict.BLOCKED
    if 400 <= status < 500 and status not in (408, 429):
        return RequestVerdict.SPLIT
    return RequestVerdict.RETRY


def blocked_kind(status: int | None, *, tls: bool = False) -> Blocked:
    """The :class:`Blocked` kind of a request or item answered ``status``."""
    if tls:
        return Blocked.TLS
    if status == 404:
        return Blocked.ENDPOINT
    return Blocked.AUTH


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
        if outcome is Outcome.LAYOUT:
            return Verdict.FATAL
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
    # retried items whose failure used up one of their attempts (FAILED, not THROTTLED)
    charged: list[T] = field(default_factory=list)
    dead: list[T] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    throttled: int = 0
    blocked: int = 0
    failed: int = 0
    rejected: int = 0
    first_error: str = ""
    # the first answer that blocks writes (BLOCKED) and the first layout problem (LAYOUT)
    blocked_by: str = ""
    layout: str = ""

    @property
    def errors(self) -> int:
        return self.throttled + self.blocked + self.failed + self.rejected


def judge(
    items: Sequence[T],
    deliveries: Sequence[int],
    results: Sequence[ItemResult],
    policy: RetryPolicy,
) -> Round[T]:
    """Sort ``items`` (with the ordinal of the attempt each just had) by the verdict on
    their ``results``."""
    out: Round[T] = Round()
    for item, delivered, result in zip(items, deliveries, results, strict=True):
        outcome = classify(result)
        verdict = policy.verdict(outcome, delivered)
        if outcome is not Outcome.APPLIED:
            _count(out, outcome, result)
        if verdict is Verdict.ACK:
            out.applied.append(item)
        elif verdict is Verdict.RETRY or verdict is Verdict.FATAL:
            out.retry.append(item)
            if outcome is Outcome.FAILED:
                out.charged.append(item)
        else:
            out.dead.append(item)
            reason = describe(result)
            if outcome is Outcome.FAILED:
                reason = f"gave up after {delivered} attempts: {reason}"
            out.reasons.append(reason)
    return out


def _count(out: Round[T], outcome: Outcome, result: ItemResult) -> None:
    if outcome is Outcome.THROTTLED:
        out.throttled += 1
    elif outcome is Outcome.BLOCKED:
        out.blocked += 1
        out.blocked_by = out.blocked_by or describe(result)
    elif outcome is Outcome.LAYOUT:
        out.blocked += 1
        out.layout = out.layout or describe(result)
    elif outcome is Outcome.FAILED:
        out.failed += 1
    else:
        out.rejected += 1
    if not out.first_error:
        out.first_error = describe(result)


def describe(result: ItemResult) -> str:
    text = f"{result.status} {result.error_type}".strip()
    return f"{text}: {result.reason}" if result.reason else text
