"""The run's verdict: the one JSON line, and the summary a person reads when it failed. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from tests.chaos.poison import DeadLetters, Planted

__all__ = ["Recovery", "RunResult", "recovery_stats", "summary", "verdict_json"]

LISTED = 10  # unexpected dead letters listed in the JSON line (all of them are in dlq.json)


@dataclass(frozen=True, slots=True)
class Recovery:
    number: int  # the fault's number in the schedule
    kind: str
    seconds: float | None  # None: not recovered (see why)
    why: str = ""


@dataclass(slots=True)
class RunResult:
    seed: int
    minutes: float
    changes_written: int
    faults: dict[str, int]
    documents_checked: int
    drift_keys: list[str]
    verify_report: dict[str, Any]
    verify_error: str
    letters: list[dict[str, str]]
    dead: DeadLetters
    planted: list[Planted]
    recoveries: list[Recovery]
    seconds: float
    run_dir: Path
    caught_up: bool = True
    catch_up_why: str = ""
    anomalies: list[str] = field(default_factory=list)  # processes that died or hung
    violations: list[str] = field(default_factory=list)  # frontiers that moved back
    load_error: str = ""
    kept: bool = True  # the run directory is kept (failed, or --keep)

    @property
    def ok(self) -> bool:
        """The brief's criterion: no drift (and verify ran) and exactly the planted poison."""
        return not self.verify_error and not self.drift_keys and self.dead.exact


def recovery_stats(recoveries: Sequence[Recovery]) -> dict[str, dict[str, float | int | None]]:
    """Per kind: max and mean seconds to recover (over the faults it recovered from), and
    how many it did not recover from."""
    by_kind: dict[str, list[Recovery]] = {}
    for recovery in recoveries:
        by_kind.setdefault(recovery.kind, []).append(recovery)
    out: dict[str, dict[str, float | int | None]] = {}
    for kind, items in sorted(by_kind.items()):
        values = [r.seconds for r in items if r.seconds is not None]
        out[kind] = {
            "max": round(max(values), 2) if values else None,
            "mean": round(fmean(values), 2) if values else None,
            "not_recovered": len(items) - len(values),
        }
    return out


def _letter_brief(letter: Mapping[str, str]) -> dict[str, str]:
    return {
        "key": letter.get("key", ""),
        "op": letter.get("op", ""),
        "ts": letter.get("ts", ""),
        "source": letter.get("source", ""),
        "reason": letter.get("reason", "")[:160],
    }


def verdict_json(result: RunResult) -> dict[str, Any]:
    unexpected = [*result.dead.unexpected, *result.dead.duplicates]
    return {
        "seed": result.seed,
        "minutes": result.minutes,
        "changes_written": result.changes_written,
        "faults": result.faults,
        "documents_checked": result.documents_checked,
        "drift": len(result.drift_keys),
        "dead_letters": len(result.letters),
        "unexpected_dead_letters": [_letter_brief(x) for x in unexpected[:LISTED]],
        "unexpected_dead_letter_count": len(unexpected),
        "planted": len(result.planted),
        "missing_planted": [p.describe() for p in result.dead.missing],
        "recover_seconds": recovery_stats(result.recoveries),
        "seconds": round(result.seconds, 1),
        "ok": result.ok,
        "caught_up": result.caught_up,
        "anomalies": len(result.anomalies),
        "invariant_violations": result.violations[:5],
        "run_dir": str(result.run_dir),
    }


def _drift_lines(result: RunResult) -> list[str]:
    if result.verify_error:
        return [f"searchsync verify did not run to the end: {result.verify_error}"]
    if not result.drift_keys:
        return []
    report = result.verify_report
    missing, extra = report.get("missing", []), report.get("extra", [])
    different: dict[str, Any] = report.get("different", {})
    lines = [
        f"DRIFT: {len(result.drift_keys)} keys differ between the view and the index "
        f"(view {report.get('view_count')} rows, index {report.get('index_count')} documents): "
        f"{len(missing)} missing in the index, {len(extra)} only in the index, "
        f"{len(different)} with different fields"
    ]
    lines += [f"  missing in index: {key}" for key in missing[:10]]
    lines += [f"  only in index:    {key}" for key in extra[:10]]
    for key, fields in list(different.items())[:10]:
        # verify --json lists the differing field names; a mapping would hold both values
        names = sorted(fields) if isinstance(fields, list | dict) else fields
        lines.append(f"  different:        {key} {names}")
    return lines


def _letter_lines(result: RunResult) -> list[str]:
    dead = result.dead
    lines = []
    if dead.unexpected:
        reasons = Counter(x.get("reason", "")[:100] for x in dead.unexpected)
        lines.append(
            f"UNEXPECTED DEAD LETTERS: {len(dead.unexpected)} real changes dead-lettered "
            f"(dlq holds {len(result.letters)}, {len(result.planted)} planted); by reason:"
        )
        lines += [f"  {count:6d} x {reason}" for reason, count in reasons.most_common(5)]
        lines += [f"  e.g. {_letter_brief(x)}" for x in dead.unexpected[:5]]
    if dead.duplicates:
        lines.append(f"DUPLICATE DEAD LETTERS of planted poison: {len(dead.duplicates)}")
        lines += [f"  {_letter_brief(x)}" for x in dead.duplicates[:5]]
    if dead.missing:
        lines.append("PLANTED POISON NOT DEAD-LETTERED (the dlq must hold every planted entry):")
        lines += [f"  {p.describe()}" for p in dead.missing]
    return lines


def summary(result: RunResult) -> str:
    """What failed, and where to look: for stderr."""
    head = "CHAOS RUN " + ("PASSED" if result.ok else "FAILED")
    lines = [
        f"{head} (seed {result.seed}, {result.minutes:g} min, {result.changes_written} changes,"
        f" {sum(result.faults.values())} faults, {result.seconds:.0f}s)"
    ]
    lines += _drift_lines(result)
    lines += _letter_lines(result)
    if not result.caught_up:
        lines.append(
            f"NOT CAUGHT UP before verify: {result.catch_up_why} (searchsync status never "
            "showed buffer 0 with every applied_ts past the end of the load; the verdict "
            "is verify's and the dlq's)"
        )
    stuck = [r for r in result.recoveries if r.seconds is None]
    if stuck:
        lines.append(f"NOT RECOVERED after {len(stuck)} faults (first one first):")
        lines += [f"  fault {r.number} {r.kind}: {r.why}" for r in stuck[:8]]
    if result.load_error:
        lines.append(f"LOAD: {result.load_error}")
    if result.violations:
        lines.append(f"INVARIANTS VIOLATED ({len(result.violations)} recorded):")
        lines += [f"  {v}" for v in result.violations[:10]]
    if result.anomalies:
        lines.append(f"PROCESS ANOMALIES ({len(result.anomalies)}):")
        lines += [f"  {a[:300]}" for a in result.anomalies[:10]]
    if result.kept:
        lines.append(
            f"Logs: {result.run_dir}/ (chaos.log: the timeline of faults; producer-*.log, "
            "consumer-*.log, load.log, emulator.log, redis/redis.log, "
            "opensearch/opensearch.log; verify.json, dlq.json, planted.json, "
            "status-final.json, result.json)"
        )
    lines.append(
        f"Replay: .venv/bin/python -m tests.chaos --seed {result.seed} --minutes {result.minutes:g}"
    )
    return "\n".join(lines)
