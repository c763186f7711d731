"""``searchsync resync``: rebuild the index behind the alias while the pipeline runs.

Pure, no I/O: the resync's record in Redis, its phases, and what a run (or an
abort) must do from the recorded phase on. cli.resync_run executes the steps,
cli.resync_load loads the snapshot, consumer.dualwrite makes consumers write
to both indexes.

How nothing is lost (the invariant every step keeps):

1. ``<alias>_v<N+1>`` (the *target*) is created with the project's mapping, and
   ``<alias>_resync`` (:func:`write_alias_of`) is moved onto it alone.
2. The record's phase becomes ``dual_write``: every consumer reads the record at
   least once a second and from then on sends every bulk to the alias *and* to
   ``<alias>_resync`` (same body, same external versions). ``<alias>_resync``, once
   made, always names an index (the target, then the live index after a swap or an
   abort): a delete-only ``_bulk`` with external versions auto-creates a missing
   index even with ``require_alias=true``, so a consumer writing a second late
   must always find it. A consumer confirms the resync's id
   in ``resync:confirmed`` once no bulk it sent before it knew is still in flight.
   A consumer that starts later reads the record before its first bulk.
3. Once every live consumer (``members``, heartbeat within LEASE_TTL_SECONDS) has
   confirmed, every change that was applied without dual write has a ts at or
   below the producer's ``high_water`` mark (the producer raises it before it
   writes an entry). H is read then; the snapshot is read ``AS OF AT LEAST H``
   (its timestamp T >= H) and every row is written to the target with version T,
   ``external_gte``. A change with ts <= T is in the snapshot; one with ts > T was
   applied after the confirmation, so dual-written, and wins by version; a delete
   after T leaves a tombstone with its version (``index.gc_deletes`` is raised for
   the load) that refuses the older snapshot row.
4. The target is verified against the view, then ONE ``_aliases`` request moves
   the alias (``is_write_index: true``) from the old index to the target
   (``<alias>_resync`` stays there). Then the record is deleted (consumers stop dual writes within
   a second) and the old index goes to ``retired`` with a delete-after time
   (``--grace``), which consumers sweep.

Interrupted anywhere, a new run resumes from the recorded phase (the load starts
over: writing a row twice at versions T and T' >= T is harmless); ``--abort``
moves ``<alias>_resync`` to the live index, deletes the target and the record. The
live index's documents and settings are not touched before the swap.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from .index import (
    IndexLayoutError,
    Layout,
    next_generation,
    versioned_name,
    write_index,
)

__all__ = [
    "DUAL_WRITE_PHASES",
    "Phase",
    "Plan",
    "Record",
    "Step",
    "Verdict",
    "describe",
    "dual_write_target",
    "parse_record",
    "plan",
    "plan_abort",
    "unconfirmed",
    "write_alias_of",
]


class Phase(enum.Enum):
    PREPARING = "preparing"  # recorded; the target may not exist yet
    DUAL_WRITE = "dual_write"  # consumers write to both; waiting for their confirmations
    LOADING = "loading"  # the snapshot is being written to the target
    VERIFYING = "verifying"  # the target is compared with the view
    SWAPPING = "swapping"  # the alias is being moved to the target


# Consumers write to the target in these phases (not while preparing: it may not exist).
DUAL_WRITE_PHASES: Final = frozenset(
    {Phase.DUAL_WRITE, Phase.LOADING, Phase.VERIFYING, Phase.SWAPPING}
)


class Step(enum.Enum):
    START = "start"  # write the record (phase preparing)
    CREATE_TARGET = "create_target"
    DUAL_WRITE = "dual_write"  # phase dual_write: consumers start writing to both
    WAIT_CONFIRMED = "wait_confirmed"
    LOAD = "load"  # read high_water, phase loading, snapshot AS OF AT LEAST it
    FINISH_LOAD = "finish_load"  # refresh_interval and gc_deletes back, refresh
    VERIFY = "verify"  # phase verifying, compare the target with the view
    SWAP = "swap"  # phase swapping, one _aliases request
    FINISH = "finish"  # retire the old index, delete the record: dual writes stop
    DELETE_TARGET = "delete_target"  # --abort
    CLEAR = "clear"  # --abort: delete the record and the confirmations


class Verdict(enum.Enum):
    RUN = "run"
    NOTHING = "nothing"  # --abort with no resync in progress (exit 0)
    REFUSED = "refused"  # exit 1, the message says why and what to do


_FULL: Final = (
    Step.START,
    Step.CREATE_TARGET,
    Step.DUAL_WRITE,
    Step.WAIT_CONFIRMED,
    Step.LOAD,
    Step.FINISH_LOAD,
    Step.VERIFY,
    Step.SWAP,
    Step.FINISH,
)


def write_alias_of(alias: str) -> str:
    """The alias consumers dual-write the target through: ``<alias>_resync``."""
    return f"{alias}_resync"


@dataclass(frozen=True, slots=True)
class Record:
    """The resync in progress, as stored in the ``resync`` hash (all values text)."""

    id: str
    phase: Phase
    alias: str
    target: str  # <alias>_v<N+1>
    old: str  # the alias's write index when the resync started
    started_ms: int
    high_water: int | None = None  # H, read once every consumer confirmed
    as_of: int | None = None  # T, the snapshot's timestamp
    loaded: int | None = None  # documents written by the last complete load

    @property
    def write_alias(self) -> str:
        return write_alias_of(self.alias)

    def fields(self) -> dict[str, str]:
        """The hash fields (HSET mapping) of this record."""
        out = {
            "id": self.id,
            "phase": self.phase.value,
            "alias": self.alias,
            "target": self.target,
            "old": self.old,
            "write_alias": self.write_alias,
            "started_ms": str(self.started_ms),
        }
        for name in ("high_water", "as_of", "loaded"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        return out


def _text(raw: Mapping[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return value.decode() if value is not None else None


def _number(raw: Mapping[bytes, bytes], name: str) -> int | None:
    text = _text(raw, name)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def parse_record(raw: Mapping[bytes, bytes]) -> Record | None:
    """The :class:`Record` of an HGETALL answer; None when there is none or it is unreadable
    (an unreadable record is treated as no resync: consumers then write once)."""
    try:
        phase = Phase(_text(raw, "phase"))
    except ValueError:
        return None
    texts = [_text(raw, name) for name in ("id", "alias", "target", "old")]
    started = _number(raw, "started_ms")
    if any(text is None for text in texts) or started is None:
        return None
    resync_id, alias, target, old = (str(text) for text in texts)
    return Record(
        id=resync_id,
        phase=phase,
        alias=alias,
        target=target,
        old=old,
        started_ms=started,
        high_water=_number(raw, "high_water"),
        as_of=_number(raw, "as_of"),
        loaded=_number(raw, "loaded"),
    )


def dual_write_target(record: Record | None) -> tuple[str, str] | None:
    """(resync id, alias to dual-write through) while consumers must write to both, else None."""
    if record is None or record.phase not in DUAL_WRITE_PHASES:
        return None
    return record.id, record.write_alias


def unconfirmed(live: Iterable[str], confirmed: Mapping[str, str], resync_id: str) -> list[str]:
    """The live consumers that have not confirmed ``resync_id`` yet, sorted."""
    return sorted(name for name in live if confirmed.get(name) != resync_id)


@dataclass(frozen=True, slots=True)
class Facts:
    """What OpenSearch says: the layout behind the alias and the ``<alias>_v<N>`` indexes."""

    layout: Layout
    indexes: Collection[str] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    verdict: Verdict
    steps: tuple[Step, ...] = ()
    record: Record | None = None
    message: str = ""
    resumed: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def _refused(message: str, record: Record | None = None) -> Plan:
    return Plan(Verdict.REFUSED, record=record, message=message)


_ABORT_HINT: Final = "`searchsync resync --abort` abandons it (deletes {target})"


def plan(record: Record | None, facts: Facts, *, alias: str, new_id: str, now_ms: int) -> Plan:
    """What ``searchsync resync`` must do, from the recorded phase on. Pure.

    ``new_id`` and ``now_ms`` name a new resync when none is recorded.
    """
    layout = facts.layout
    if record is None:
        try:
            old = write_index(layout)
        except IndexLayoutError as error:
            return _refused(str(error))
        generation = next_generation(alias, [*facts.indexes, *layout.members])
        target = versioned_name(alias, generation)
        fresh = Record(new_id, Phase.PREPARING, alias, target, old, now_ms)
        return Plan(Verdict.RUN, _FULL, fresh)
    if record.alias != alias:
        return _refused(
            f"a resync of alias {record.alias} is recorded for this view, but OS_INDEX_NAME is "
            f"{alias}: run with OS_INDEX_NAME={record.alias} to finish or abort it.",
            record,
        )
    hint = _ABORT_HINT.format(target=record.target)
    try:
        writes_to = write_index(layout)
    except IndexLayoutError as error:
        return _refused(f"{error} (a resync is recorded: {hint})", record)
    if record.phase is Phase.SWAPPING and writes_to == record.target:
        return Plan(Verdict.RUN, (Step.FINISH,), record, resumed=True)
    if writes_to != record.old:
        return _refused(
            f"the alias {alias} now writes to {writes_to}, not to {record.old} as when resync "
            f"{record.id} started: someone moved it. {hint}, then start again.",
            record,
        )
    if record.phase is Phase.PREPARING:
        return Plan(Verdict.RUN, _FULL[1:], record, resumed=True)
    if record.target not in facts.indexes:
        return _refused(
            f"the new index {record.target} of resync {record.id} is gone (deleted by hand?). "
            f"{hint}, then start again.",
            record,
        )
    start = {
        Phase.DUAL_WRITE: Step.WAIT_CONFIRMED,
        Phase.LOADING: Step.WAIT_CONFIRMED,
        Phase.VERIFYING: Step.FINISH_LOAD,
        Phase.SWAPPING: Step.SWAP,
    }[record.phase]
    return Plan(Verdict.RUN, _FULL[_FULL.index(start) :], record, resumed=True)


def plan_abort(record: Record | None, facts: Facts, *, alias: str) -> Plan:
    """What ``searchsync resync --abort`` must do. Pure. Never deletes an index behind
    the alias."""
    if record is None:
        return Plan(Verdict.NOTHING, message="no resync is in progress: nothing to abort")
    behind = set(facts.layout.members)
    if record.target in behind:
        return _refused(
            f"the alias {record.alias} already points at {record.target} (the swap is done): "
            f"`searchsync resync` finishes the resync; to go back, point the alias at "
            f"{record.old} (POST /_aliases) while it is kept.",
            record,
        )
    try:
        write_index(facts.layout)
    except IndexLayoutError as error:
        return _refused(f"{error} (fix that first, then abort)", record)
    return Plan(Verdict.RUN, (Step.DELETE_TARGET, Step.CLEAR), record)


def describe(the_plan: Plan, *, grace_seconds: float, keep_old: bool) -> list[str]:
    """The plan in numbered sentences for the confirmation prompt. Pure."""
    record = the_plan.record
    if record is None:
        return []
    alias, target, old, write = record.alias, record.target, record.old, record.write_alias
    keep = (
        f"keep {old} (--keep-old: delete it yourself)"
        if keep_old
        else f"keep {old} for {grace_seconds:.0f} s, then consumers delete it"
    )
    words = {
        Step.START: f"record resync {record.id} in Redis (the live index {old} is not touched "
        f"until the swap)",
        Step.CREATE_TARGET: f"create {target} with the project's mapping and refresh off; move "
        f"the alias {write} to it",
        Step.DUAL_WRITE: f"make every consumer write each change to {alias} and {target} "
        f"(they pick it up within a second)",
        Step.WAIT_CONFIRMED: "wait until every live consumer confirms it writes to both",
        Step.LOAD: f"load the view's snapshot at a timestamp T >= the high-water mark into "
        f"{target} with version T (newer live changes and deletes win)",
        Step.FINISH_LOAD: f"turn refresh and gc_deletes of {target} back to normal",
        Step.VERIFY: f"compare {target} with the view, every document",
        Step.SWAP: f"in one _aliases request move {alias} from {old} to {target} "
        f"(is_write_index: true)",
        Step.FINISH: f"stop dual writes; {keep}",
        Step.DELETE_TARGET: f"move the alias {write} to the live index and delete {target} "
        f"(the live index's documents and settings stay as they are)",
        Step.CLEAR: "delete the resync's record: consumers go back to single writes",
    }
    return [f"  {n}. {words[step]}" for n, step in enumerate(the_plan.steps, 1)]


def advanced(record: Record, phase: Phase, **changes: int | None) -> Record:
    """``record`` in ``phase`` with ``changes`` (high_water, as_of, loaded)."""
    return replace(record, phase=phase, **changes)  # type: ignore[arg-type]
