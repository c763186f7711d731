"""Whether a producer or a consumer is healthy: the rules behind ``GET /healthz``.

The process records what it observes in :class:`HealthFacts` (a dependency
answered or failed, its loop ticked, progress was made, work is waiting);
:func:`assess` turns a :class:`Snapshot` of them into a verdict with no I/O and
no clock of its own. The rules, first match wins:

1. **Loop stalled**: the event loop's heartbeat (common.endpoint.heartbeat, every
   0.5 s) has not run for longer than ``unreachable_after`` (something blocks the
   loop) → 503 ``event loop stalled: no tick for 12s``.
2. **Dependency unreachable**: Redis, OpenSearch or Materialize has failed every
   attempt for longer than ``unreachable_after`` (no success since its first
   failure) → 503 ``Redis failing for 12s: Error 111 connecting to …``.
3. **No progress while work is pending**: work is waiting (a consumer holds
   changes read and not acknowledged; an active producer is not paused by
   backpressure) and nothing progressed (a consumer acknowledged nothing, the
   producer's checkpoint did not move) for longer than ``stalled_after``,
   counted from the later of the last progress and the moment the work appeared
   → 503 ``no progress for 95s while 1200 changes in hand``.
4. Otherwise 200 ``ok``.

:func:`limits_for` derives the limits from the settings: ``unreachable_after`` is
LEASE_TTL_SECONDS (by then the process has lost its leases, so it does no work);
``stalled_after`` is 60 s, or more when a single step may legitimately take
longer (two OpenSearch timeouts plus the longest backoff for a consumer; three
poll intervals for a polling producer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .config import Settings

__all__ = ["HealthFacts", "Limits", "Snapshot", "Verdict", "assess", "limits_for"]

# Below this, a quiet stream, one slow bulk or a GC pause would look like a stall.
MIN_STALL_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    unreachable_after: float
    stalled_after: float


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # one line

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The facts at one moment; times are wall-clock seconds."""

    ticked_at: float
    progress_at: float
    # what is waiting ("1200 changes in hand"), empty when nothing is; and since when
    work: str
    work_since: float | None
    # dependency name -> (failing since, last error), only for those failing now
    failing: tuple[tuple[str, float, str], ...]


def limits_for(settings: Settings, *, role: str) -> Limits:
    """The limits of a ``role`` ("producer" or "consumer") process (module docstring)."""
    stall = MIN_STALL_SECONDS
    if role == "consumer":
        stall = max(stall, 2 * settings.os_timeout_seconds + settings.retry_max_backoff)
    elif not settings.use_subscribe:
        stall = max(stall, 3 * settings.poll_interval)
    return Limits(unreachable_after=settings.lease_ttl_seconds, stalled_after=stall)


def assess(facts: Snapshot, now: float, limits: Limits) -> Verdict:
    """The verdict for ``facts`` at ``now`` (rules in the module docstring)."""
    quiet = now - facts.ticked_at
    if quiet > limits.unreachable_after:
        return Verdict(False, f"event loop stalled: no tick for {quiet:.0f}s")
    for name, since, error in sorted(facts.failing, key=lambda failing: failing[1]):
        if now - since > limits.unreachable_after:
            return Verdict(False, f"{name} failing for {now - since:.0f}s: {error}")
    if facts.work and facts.work_since is not None:
        idle = now - max(facts.progress_at, facts.work_since)
        if idle > limits.stalled_after:
            return Verdict(False, f"no progress for {idle:.0f}s while {facts.work}")
    return Verdict(True, "ok")


class HealthFacts:
    """What the process observed, written on its event loop, read by the /healthz thread.

    Only plain attribute assignments: a reader may see one fact a moment newer
    than another, never a torn value, and the writer never waits for a reader.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        started = clock()
        self._ticked_at = started
        self._progress_at = started
        self._work = ""
        self._work_since: float | None = None
        self._failing: dict[str, tuple[float, str]] = {}

    def tick(self) -> None:
        """The process's periodic loop ran."""
        self._ticked_at = self._clock()

    def answered(self, dependency: str) -> None:
        """``dependency`` answered a request: it is reachable."""
        if dependency in self._failing:
            failing = dict(self._failing)
            del failing[dependency]
            self._failing = failing

    def failed(self, dependency: str, error: str) -> None:
        """A request to ``dependency`` failed; it counts as unreachable from the first
        failure after its last answer."""
        since = self._failing.get(dependency, (self._clock(), ""))[0]
        line = (error.strip().splitlines() or ["?"])[0][:300]
        self._failing = {**self._failing, dependency: (since, line)}

    def progressed(self) -> None:
        """Work moved forward (changes acknowledged, the checkpoint moved)."""
        self._progress_at = self._clock()

    def waiting(self, work: str) -> None:
        """What is waiting to be done, in words ("" = nothing)."""
        if work and not self._work:
            self._work_since = self._clock()
        elif not work:
            self._work_since = None
        self._work = work

    def snapshot(self) -> Snapshot:
        failing = self._failing  # replaced, never mutated: safe to read from another thread
        return Snapshot(
            ticked_at=self._ticked_at,
            progress_at=self._progress_at,
            work=self._work,
            work_since=self._work_since,
            failing=tuple((name, since, error) for name, (since, error) in failing.items()),
        )

    def verdict(self, limits: Limits) -> Verdict:
        return assess(self.snapshot(), self._clock(), limits)
