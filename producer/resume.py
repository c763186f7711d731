"""Where a subscription starts: exact resume from the checkpoint, or a snapshot.

Pure, no I/O. With a checkpoint F (every change below F is in the streams) the
subscription is declared ``AS OF F-1``: Materialize then emits the view as of
F-1 as its snapshot and every change from F on — the documented ``AS OF F``
would emit F's changes only as part of a snapshot. That snapshot is read but not
written (``write_snapshot`` False): it is already in the streams, and it is what
the consolidator's per-key state is rebuilt from (producer.consolidate: which
keys have a live row, which have several), so that a second row arriving for a
key, or one of two retracted, is judged against the view and not against an
empty state. If Materialize no longer has that history it refuses the AS OF;
then the start is a snapshot at a time T it picks, written as upserts and followed
by a reconcile marker at T (documents older than T that the snapshot did not
rewrite were deleted while we were away). A written snapshot is declared ``AS OF AT
LEAST`` the streams' high-water mark: a session that wrote progress entries and
then failed before its checkpoint moved (fenced, or the connection cut) left a
progress entry F in the streams, and a snapshot at T < F written after it would be
below a frontier the consumers already applied (found by tests/sim, seeds 3689 and
7582: the reconcile ran before the snapshot was indexed).

DISCARD_SNAPSHOT=true (the runbook's mode) reads the snapshot too, for the state
only: changes only, from whenever Materialize starts us. ENVELOPE UPSERT keeps no
state of ours (Materialize reports violations itself), so it resumes with
``SNAPSHOT = false`` and skips that read.
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

    ``as_of`` None lets Materialize pick; ``snapshot`` is the declared SNAPSHOT;
    ``write_snapshot`` whether its rows go to the streams (else they only rebuild
    the per-key state); ``reconcile`` says the written snapshot must be followed by
    a reconcile marker at its timestamp; ``at_least`` declares ``AS OF AT LEAST
    as_of`` (Materialize picks a readable time at or above it, never refuses).
    """

    as_of: int | None
    snapshot: bool
    reconcile: bool
    reason: str
    write_snapshot: bool = True
    at_least: bool = False


def plan_start(
    checkpoint: int | None,
    *,
    discard_snapshot: bool,
    refused: bool,
    keeps_state: bool = True,
    high_water: int | None = None,
) -> StartPlan:
    """The plan for a checkpoint (None: none stored) after ``refused`` AS OF attempts.

    ``discard_snapshot`` is the runbook's DISCARD_SNAPSHOT=true: changes only, from
    whenever Materialize starts us, whatever the checkpoint says. ``keeps_state``
    is False for ENVELOPE UPSERT (no per-key state to rebuild). ``high_water`` is
    the streams' high-water mark (None: none): a written snapshot is declared AS OF
    AT LEAST it, so it is never below a progress entry already in the streams.
    """
    if discard_snapshot:
        reason = "DISCARD_SNAPSHOT=true: streaming changes only"
        return StartPlan(None, keeps_state, False, reason, write_snapshot=False)
    if checkpoint is not None and not refused:
        reason = f"resuming from checkpoint {checkpoint}"
        if keeps_state:
            reason += " (its snapshot rebuilds the per-key state, nothing of it is written)"
        return StartPlan(max(checkpoint - 1, 0), keeps_state, False, reason, write_snapshot=False)
    if checkpoint is None:
        reason = "no checkpoint: writing a snapshot"
    else:
        reason = f"AS OF {checkpoint - 1} refused: writing a snapshot"
    if high_water is None:
        return StartPlan(None, True, True, reason)
    reason += f" at or above the high-water mark {high_water}"
    return StartPlan(high_water, True, True, reason, at_least=True)


def as_of_refused(message: str) -> bool:
    """Whether an error message is Materialize refusing an AS OF below its history."""
    return _REFUSED.search(message) is not None
