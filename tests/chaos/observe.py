"""Reading the pipeline's progress: recovery after a fault, catching up at the end, verify.

"Recovered" means what ``searchsync status`` calls ``applied_ts``: every partition
has applied everything below a Materialize timestamp, and Materialize timestamps
are wall-clock milliseconds, so "every partition's applied_ts is past the moment
the fault ended" means every change made before the fault ended is searchable.

The CLI costs ~0.6 s of CPU per call (seconds of wall time on a busy 2-core box),
too much to poll several times a second or even once per fault: confirming each
recovery with it put a run 30 s behind its schedule. So :class:`Frontier` polls the
keys the CLI reads ``applied_ts`` from (``Keys.applied``, one GET each) every 0.2 s;
:meth:`Frontier.agrees_with_cli` checks once per run that the CLI reports the same
frontiers, and the final catch-up polls the CLI itself.

A pipeline that stops moving is not waited for until a long timeout: when no
partition's frontier has advanced for ``stall_seconds`` the wait gives up and says
so (a stalled run must still end, and report, within its time budget).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from searchsync.common.keys import Keys
from tests.chaos.stack import PARTITIONS, VIEW, ChaosStack

__all__ = ["CatchUp", "Frontier", "Verify", "Wait", "run_verify", "wait_caught_up"]

POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float | None  # from the moment waited for until it was past; None: gave up
    why: str  # why it gave up


class Frontier:
    """The per-partition applied frontiers, read straight from Redis.

    Every read also checks two invariants the README promises, so a violation is
    seen even when it heals before the end: the producer's checkpoint never moves
    back ("nothing moves it back"), and no partition's applied frontier does (every
    change below it is in OpenSearch; a lower value would un-say that).
    """

    MAX_RECORDED = 20

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.keys = Keys(VIEW, PARTITIONS)
        self.violations: list[str] = []
        self._checkpoint = 0
        self._applied = [0] * PARTITIONS

    def applied(self) -> list[int] | None:
        """applied_ts of every partition (0 when none yet); None when Redis is unreachable."""
        try:
            client = redis.Redis(port=self.stack.redis.port, socket_timeout=2)
            try:
                with client.pipeline(transaction=False) as pipe:
                    for n in range(PARTITIONS):
                        pipe.get(self.keys.applied(n))
                    pipe.get(self.keys.checkpoint)
                    *raw, checkpoint = pipe.execute()
            finally:
                client.close()
        except redis.RedisError:
            return None
        applied = [int(value or 0) for value in raw]
        self.check(applied, int(checkpoint or 0))
        return applied

    def check(self, applied: list[int], checkpoint: int) -> None:
        """Record any frontier lower than the highest seen before."""
        if checkpoint < self._checkpoint:
            self._violation(f"checkpoint moved back from {self._checkpoint} to {checkpoint}")
        self._checkpoint = max(self._checkpoint, checkpoint)
        for n, (before, now) in enumerate(zip(self._applied, applied, strict=True)):
            if now < before:
                self._violation(f"p{n} applied_ts moved back from {before} to {now}")
            self._applied[n] = max(before, now)

    def _violation(self, what: str) -> None:
        if len(self.violations) < self.MAX_RECORDED:
            stamp = time.strftime("%H:%M:%S")
            self.violations.append(f"{stamp} {what}")

    def agrees_with_cli(self) -> str:
        """ "" when ``searchsync status --json`` reports, per partition, an applied_ts at or
        past what the hash said just before; else what differs (the interface changed)."""
        before = self.applied()
        status = self.stack.status()
        if before is None or status is None:
            return "status or Redis did not answer"
        reported = [p.get("applied_ts") for p in status.get("partitions", [])]
        if len(reported) != PARTITIONS or any(
            r is None or r < b for r, b in zip(reported, before, strict=True)
        ):
            return f"searchsync status applied_ts {reported} vs {self.keys.applied} {before}"
        return ""

    def wait_past(
        self, since_ms: int, timeout: float, stall_seconds: float, idle: Callable[[], None]
    ) -> Wait:
        """Until every partition's applied_ts is past ``since_ms`` (wall clock, ms).
        ``idle`` runs between polls (the watchdog)."""
        started = time.monotonic()
        lowest, moved = -1, started
        while (now := time.monotonic()) - started < timeout:
            applied = self.applied()
            if applied is not None:
                if min(applied) > since_ms:
                    return Wait(max(0.0, time.time() - since_ms / 1000), "")
                if min(applied) > lowest:
                    lowest, moved = min(applied), now
            if now - moved > stall_seconds:
                return Wait(None, f"stalled: lowest applied_ts {lowest} for {stall_seconds:g}s")
            idle()
            time.sleep(POLL_SECONDS)
        return Wait(None, f"timed out after {timeout:g}s: lowest applied_ts {lowest}")


@dataclass(slots=True)
class CatchUp:
    ok: bool
    seconds: float
    status: dict[str, Any] | None
    why: str  # what was still missing when it timed out


def _lagging(status: dict[str, Any], target_ts: int, reconcile: dict[bytes, bytes]) -> str:
    behind = [
        f"p{p['partition']} applied {p.get('applied_ts')}"
        for p in status["partitions"]
        if (p.get("applied_ts") or 0) <= target_ts
    ]
    parts = []
    if status.get("buffer", 0) != 0:
        parts.append(f"buffer {status['buffer']}")
    if behind:
        parts.append(f"behind ts {target_ts}: {', '.join(behind)}")
    pending = [k.decode() for k, v in reconcile.items() if v != b"done"]
    if pending:
        parts.append(f"reconcile not done for {pending}")
    return "; ".join(parts)


def wait_caught_up(
    stack: ChaosStack,
    target_ts: int,
    timeout: float,
    stall_seconds: float,
    idle: Callable[[], None],
) -> CatchUp:
    """Until ``searchsync status`` shows buffer 0, every applied_ts past ``target_ts``, and
    every reconcile the producer asked for done (else verify would see documents a
    pending reconcile is about to delete). Gives up after ``timeout``, or when neither
    the frontiers nor the buffer changed for ``stall_seconds``."""
    started = time.monotonic()
    keys = Keys(VIEW, PARTITIONS)
    why = "no status yet"
    status: dict[str, Any] | None = None
    last: tuple[Any, ...] = ()
    moved = started
    while (now := time.monotonic()) - started < timeout:
        status = stack.status()
        if status is not None:
            why = _lagging(status, target_ts, _reconcile_states(stack, keys))
            if not why:
                return CatchUp(True, now - started, status, "")
            # progress towards the goal only: a frontier already past the target keeps
            # moving with progress entries, and must not hide a buffer that never drains
            seen = (
                status.get("buffer"),
                *[min(p.get("applied_ts") or 0, target_ts + 1) for p in status["partitions"]],
            )
            if seen != last:
                last, moved = seen, now
        if now - moved > stall_seconds:
            return CatchUp(False, now - started, status, f"stalled {stall_seconds:g}s: {why}")
        idle()
        time.sleep(1.0)
    return CatchUp(False, time.monotonic() - started, status, why)


def _reconcile_states(stack: ChaosStack, keys: Keys) -> dict[bytes, bytes]:
    try:
        client = redis.Redis(port=stack.redis.port, socket_timeout=2)
        try:
            states: Any = client.hgetall(keys.reconcile)
        finally:
            client.close()
    except redis.RedisError:
        return {b"?": b"redis unreachable"}
    return dict(states)


@dataclass(slots=True)
class Verify:
    ok: bool
    report: dict[str, Any]
    error: str

    @property
    def drift_keys(self) -> list[str]:
        report = self.report
        return sorted(
            {*report.get("missing", []), *report.get("extra", []), *report.get("different", {})}
        )

    @property
    def documents_checked(self) -> int:
        return int(self.report.get("view_count", 0)) + len(self.report.get("extra", []))


def run_verify(stack: ChaosStack, settle: float) -> Verify:
    """``searchsync verify --json``: exit 0 no drift, 1 drift, anything else an error."""
    result = stack.cli("verify", "--json", "--settle", f"{settle:g}", timeout=300)
    (stack.run_dir / "verify.json").write_text(result.stdout)
    if result.returncode not in (0, 1):
        return Verify(False, {}, f"exit {result.returncode}: {result.stderr.strip()[-2000:]}")
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return Verify(False, {}, f"unreadable output: {result.stdout[:500]!r}")
    return Verify(bool(report.get("ok")), report, "")
