"""The chaos run's fault schedule: which fault, when, with which parameters. Pure.

``build_schedule(seed, phase_seconds)`` is a function of its arguments only
(``random.Random(seed)``), so a failing run is replayed with ``--seed``. A *round*
holds every fault kind the run must survive, at least :data:`MIN_COUNTS` times
each, in a seeded order; a long phase repeats rounds. Faults are serialized: each
one is given a slot of its :data:`BUDGET` (the fault itself, the pipeline's
recovery and a gap), and the phase's spare time is spread between the slots at
random, so the moments differ from seed to seed while the faults never overlap.
The runner (tests.chaos.run) waits for a fault's planned moment *and* for the
previous fault's recovery, so a slow recovery delays the next fault instead of
mixing two causes.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = [
    "BUDGET",
    "MIN_COUNTS",
    "ROUND_SECONDS",
    "Fault",
    "Kind",
    "build_schedule",
    "fault_counts",
    "rounds_for",
]


class Kind(enum.StrEnum):
    PRODUCER_KILL = "producer_kill"  # kill -9 the active producer, restart it as the standby
    CONSUMER_KILL = "consumer_kill"  # kill -9 a consumer, restart it under its name
    REDIS_RESTART = "redis_restart"  # SIGTERM redis-server, start it on the same port and data
    OPENSEARCH_STOP = "opensearch_stop"  # the node down for 30 s (SIGTERM or SIGKILL)
    UNAUTHORIZED = "unauthorized"  # every OpenSearch request answered 401 for 20 s
    MZ_DROP = "mz_drop_connections"  # the emulator aborts every client connection
    COMPACTION = "compaction"  # both producers down, history compacted, both restarted
    SCALE_UP = "scale_up"  # consumers to 6
    SCALE_DOWN = "scale_down"  # consumers to 2, by SIGTERM
    PLANT_POISON = "plant_poison"  # not a fault: hand-written entries for the dlq


MIN_COUNTS: Final[dict[Kind, int]] = {
    Kind.PRODUCER_KILL: 5,
    Kind.CONSUMER_KILL: 10,
    Kind.REDIS_RESTART: 1,
    Kind.OPENSEARCH_STOP: 1,
    Kind.UNAUTHORIZED: 1,
    Kind.MZ_DROP: 1,
    Kind.COMPACTION: 1,
    Kind.SCALE_UP: 1,
    Kind.SCALE_DOWN: 1,
}

OPENSEARCH_DOWN_SECONDS: Final = 30.0
UNAUTHORIZED_SECONDS: Final = 20.0
SCALE_UP_TO: Final = 6
SCALE_DOWN_TO: Final = 2

# Seconds a fault's slot takes on this 2-core box: the fault, the recovery the
# runner waits for, and a gap, measured on today's code with a margin.
BUDGET: Final[dict[Kind, float]] = {
    Kind.PRODUCER_KILL: 8.0,
    Kind.CONSUMER_KILL: 7.0,
    Kind.REDIS_RESTART: 10.0,
    Kind.OPENSEARCH_STOP: 55.0,
    Kind.UNAUTHORIZED: 28.0,
    Kind.MZ_DROP: 6.0,
    Kind.COMPACTION: 18.0,
    Kind.SCALE_UP: 8.0,
    Kind.SCALE_DOWN: 12.0,
    Kind.PLANT_POISON: 3.0,
}
# Quiet time after the load starts (the first snapshot is indexed) and before it stops.
WARMUP_SECONDS: Final = 15.0
COOLDOWN_SECONDS: Final = 10.0
ROUND_SECONDS: Final = sum(BUDGET[k] * n for k, n in MIN_COUNTS.items()) + BUDGET[Kind.PLANT_POISON]


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault. ``at`` is seconds after the load started; ``down`` how long
    the fault lasts (a killed process stays dead, the node stays down, 401 is answered,
    history is compacted with no producer); ``victim`` picks among the processes alive
    at that moment (modulo their number); ``hard`` SIGKILLs the OpenSearch node
    instead of SIGTERM."""

    number: int
    round: int
    kind: Kind
    at: float
    down: float
    victim: int
    hard: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": str(self.kind)}


def rounds_for(phase_seconds: float) -> int:
    """Rounds that fit the phase (at least one: the minimum counts always run)."""
    usable = phase_seconds - WARMUP_SECONDS - COOLDOWN_SECONDS
    return max(1, int(usable // ROUND_SECONDS))


def _round_kinds(rng: random.Random, with_poison: bool) -> list[Kind]:
    kinds = [kind for kind, count in MIN_COUNTS.items() for _ in range(count)]
    if with_poison:
        kinds.append(Kind.PLANT_POISON)
    rng.shuffle(kinds)
    up, down = kinds.index(Kind.SCALE_UP), kinds.index(Kind.SCALE_DOWN)
    if down < up:  # the run scales 1 -> 6 -> 2: up first
        kinds[up], kinds[down] = kinds[down], kinds[up]
    return kinds


def _down_seconds(rng: random.Random, kind: Kind) -> float:
    if kind is Kind.OPENSEARCH_STOP:
        return OPENSEARCH_DOWN_SECONDS
    if kind is Kind.UNAUTHORIZED:
        return UNAUTHORIZED_SECONDS
    if kind is Kind.COMPACTION:
        return round(rng.uniform(2.0, 4.0), 2)
    if kind in (Kind.PRODUCER_KILL, Kind.CONSUMER_KILL, Kind.REDIS_RESTART):
        return round(rng.uniform(0.3, 2.0), 2)
    return 0.0


def _spread(rng: random.Random, slack: float, parts: int) -> list[float]:
    """``slack`` seconds cut at random into ``parts`` gaps (they add up to ``slack``)."""
    cuts = sorted(rng.uniform(0.0, slack) for _ in range(parts - 1))
    edges = [0.0, *cuts, slack]
    return [b - a for a, b in itertools.pairwise(edges)]


def build_schedule(seed: int, phase_seconds: float) -> list[Fault]:
    """The faults of a phase of ``phase_seconds``, in order of ``at``."""
    rng = random.Random(seed)
    rounds = rounds_for(phase_seconds)
    span = max(phase_seconds - WARMUP_SECONDS - COOLDOWN_SECONDS, ROUND_SECONDS * rounds)
    per_round = span / rounds
    faults: list[Fault] = []
    for number in range(rounds):
        kinds = _round_kinds(rng, with_poison=number == 0)
        busy = sum(BUDGET[kind] for kind in kinds)
        gaps = _spread(rng, max(0.0, per_round - busy), len(kinds) + 1)
        at = WARMUP_SECONDS + number * per_round
        for kind, gap in zip(kinds, gaps, strict=False):
            at += gap
            faults.append(
                Fault(
                    number=len(faults) + 1,
                    round=number + 1,
                    kind=kind,
                    at=round(at, 2),
                    down=_down_seconds(rng, kind),
                    victim=rng.randrange(1_000_000),
                    hard=rng.random() < 0.5,
                )
            )
            at += BUDGET[kind]
    return faults


def fault_counts(faults: Iterable[Fault]) -> Counter[Kind]:
    """How many of each kind (poison planting included)."""
    return Counter(fault.kind for fault in faults)
