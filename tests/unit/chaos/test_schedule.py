"""The chaos run's seeded schedule (tests.chaos.schedule): reproducible, complete, serialized."""

from __future__ import annotations

import itertools

import pytest

from tests.chaos.schedule import (
    BUDGET,
    MIN_COUNTS,
    ROUND_SECONDS,
    Kind,
    build_schedule,
    fault_counts,
    rounds_for,
)

DEFAULT_PHASE = 300.0


def test_same_seed_same_schedule() -> None:
    assert build_schedule(7, DEFAULT_PHASE) == build_schedule(7, DEFAULT_PHASE)


def test_other_seeds_change_order_and_moments() -> None:
    schedules = {tuple((f.kind, f.at) for f in build_schedule(s, DEFAULT_PHASE)) for s in range(5)}
    assert len(schedules) == 5


@pytest.mark.parametrize("seed", range(20))
def test_every_required_fault_at_least_its_minimum(seed: int) -> None:
    counts = fault_counts(build_schedule(seed, DEFAULT_PHASE))
    for kind, minimum in MIN_COUNTS.items():
        assert counts[kind] >= minimum, kind
    assert counts[Kind.PRODUCER_KILL] >= 5
    assert counts[Kind.CONSUMER_KILL] >= 10
    assert counts[Kind.PLANT_POISON] == 1


@pytest.mark.parametrize("seed", range(20))
def test_faults_are_serialized_inside_the_phase(seed: int) -> None:
    faults = build_schedule(seed, DEFAULT_PHASE)
    for earlier, later in itertools.pairwise(faults):
        # each fault's slot (fault + recovery + gap) ends before the next one starts
        assert later.at >= earlier.at + BUDGET[earlier.kind] - 0.01
    assert faults[0].at > 0
    assert faults[-1].at + BUDGET[faults[-1].kind] <= DEFAULT_PHASE
    assert [f.number for f in faults] == list(range(1, len(faults) + 1))


@pytest.mark.parametrize("seed", range(20))
def test_scale_up_comes_before_scale_down_in_every_round(seed: int) -> None:
    faults = build_schedule(seed, 900.0)
    for number in {f.round for f in faults}:
        kinds = [f.kind for f in faults if f.round == number]
        assert kinds.index(Kind.SCALE_UP) < kinds.index(Kind.SCALE_DOWN)


def test_fault_durations() -> None:
    faults = build_schedule(3, DEFAULT_PHASE)
    by_kind = {f.kind: f for f in faults}
    assert by_kind[Kind.OPENSEARCH_STOP].down == 30.0
    assert by_kind[Kind.UNAUTHORIZED].down == 20.0
    assert 2.0 <= by_kind[Kind.COMPACTION].down <= 4.0


def test_longer_phases_repeat_rounds() -> None:
    assert rounds_for(DEFAULT_PHASE) == 1
    assert rounds_for(60.0) == 1  # a short phase still gets every fault once
    long = build_schedule(1, 3 * ROUND_SECONDS + 60)
    counts = fault_counts(long)
    assert counts[Kind.CONSUMER_KILL] == 3 * MIN_COUNTS[Kind.CONSUMER_KILL]
    assert counts[Kind.PLANT_POISON] == 1  # poison once: the dlq must hold exactly it
