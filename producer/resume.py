"""Where a subscription starts: exact resume from the checkpoint, or a snapshot.

Pure, no I/O. With a checkpoint F (every change below F is in the streams) the
subscription is declared ``AS OF F-1 WITH (SNAPSHOT = false)``: Materialize then
emits exactly the times above F-1, i.e. from F on — the documented ``AS OF F``
would emit F's changes only as part of a snapshot, so without a snapshot they
would be lost. If Materialize no longer has that history it refuses the AS OF;
then the start is a snapshot at a time T it picks, written as upserts and followed
by a reconcile marker at T (documents older than T that the snapshot did not
rewrite were deleted while we were away).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["StartPlan", "as_of_refused", "plan_start"]

# Materialize's two wordings for an AS OF older than the retained history: the
# older "Timestamp (…) is not valid for all inputs: […]" and the current
# "could not find a valid timestamp for the query".
_REFUSED: Final = re.compile(
    r"Timestamp \(\d+\) is not valid for all inputs|could not find a valid timestamp",
    re.IGNORECASE,
)


class StartPlan(NamedTuple):
    """How to declare the next subscription.

    ``as_of`` None lets Materialize pick; ``reconcile`` says the snapshot must be
    followed by a reconcile marker at its timestamp.
    """

    as_of: int | None
    snapshot: bool
    reconcile: bool
    reason: str


def plan_start(checkpoint: int | None, *, discard_snapshot: bool, refused: bool) -> StartPlan:
    """The plan for a checkpoint (None: none stored) after ``refused`` AS OF attempts.

    ``discard_snapshot`` is the runbook's DISCARD_SNAPSHOT=true: changes only, from
    whenever Materialize starts us, whatever the checkpoint says.
    """
    if discard_snapshot:
        return StartPlan(None, False, False, "DISCARD_SNAPSHOT=true: streaming changes only")
    if checkpoint is None:
        return StartPlan(None, True, True, "no checkpoint: writing a snapshot")
    if refused:
        return StartPlan(None, True, True, f"AS OF {checkpoint - 1} refused: writing a snapshot")
    return StartPlan(max(checkpoint - 1, 0), False, False, f"resuming from checkpoint {checkpoint}")


def as_of_refused(message: str) -> bool:
    """Whether an error message is Materialize refusing an AS OF below its history."""
    return _REFUSED.search(message) is not None
