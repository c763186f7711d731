"""The chaos run's verdict (pure parts): dead letters against the planted poison, the JSON
line and the summary, and the frontier invariants checked while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from tests.chaos.observe import Frontier
from tests.chaos.poison import ABSURD_TS, Planted, classify
from tests.chaos.report import Recovery, RunResult, recovery_stats, summary, verdict_json
from tests.chaos.stack import PARTITIONS, ChaosStack


def _planted() -> list[Planted]:
    return [
        Planted(3, "1-0", "u", "poison-1", 1000, "{}"),
        Planted(5, "2-0", "p", "", ABSURD_TS, None),
    ]


def test_dead_letters_sorted_against_the_planted_poison() -> None:
    letters = [
        {"key": "poison-1", "op": "u", "ts": "1000", "source": "p3/1-0", "reason": "400"},
        {"key": "", "op": "p", "ts": str(ABSURD_TS), "source": "p5/2-0", "reason": "ts"},
        {"key": "poison-1", "op": "u", "ts": "1000", "source": "p3/1-0", "reason": "400"},
        {"key": "order:FM-1", "op": "u", "ts": "5", "source": "p1/9-0", "reason": "401"},
    ]
    dead = classify(letters, _planted())
    assert sorted(dead.matched) == [0, 1]
    assert [x["key"] for x in dead.duplicates] == ["poison-1"]
    assert [x["key"] for x in dead.unexpected] == ["order:FM-1"]
    assert dead.missing == []
    assert not dead.exact


def test_a_planted_entry_not_dead_lettered_is_missing() -> None:
    letters = [{"key": "poison-1", "op": "u", "ts": "1000", "source": "x", "reason": "400"}]
    dead = classify(letters, _planted())
    assert [p.op for p in dead.missing] == ["p"]
    assert dead.unexpected == []
    assert not dead.exact
    assert classify([], []).exact


def test_recovery_stats_over_recovered_faults_and_count_the_rest() -> None:
    stats = recovery_stats(
        [
            Recovery(1, "a", 1.0),
            Recovery(2, "a", 3.0),
            Recovery(3, "a", None, "stalled"),
            Recovery(4, "b", None, "stalled"),
        ]
    )
    assert stats == {
        "a": {"max": 3.0, "mean": 2.0, "not_recovered": 1},
        "b": {"max": None, "mean": None, "not_recovered": 1},
    }


def test_verdict_line_and_summary_name_what_failed(tmp_path: Path) -> None:
    planted = _planted()
    letters = [{"key": "order:FM-7", "op": "u", "ts": "5", "source": "p1/9-0", "reason": "401 x"}]
    result = RunResult(
        seed=4,
        minutes=5.0,
        changes_written=100_000,
        faults={"producer_kill": 5},
        documents_checked=3000,
        drift_keys=["order:FM-7"],
        verify_report={
            "missing": ["order:FM-7"],
            "extra": [],
            "different": {"order:FM-8": ["order_status", "customer_address"]},
        },
        verify_error="",
        letters=letters,
        dead=classify(letters, planted),
        planted=planted,
        recoveries=[
            Recovery(1, "producer_kill", 2.0),
            Recovery(2, "redis_restart", None, "stalled"),
        ],
        seconds=400.0,
        run_dir=tmp_path,
    )
    line = verdict_json(result)
    for name in (
        "seed", "minutes", "changes_written", "faults", "documents_checked", "drift",
        "dead_letters", "unexpected_dead_letters", "planted", "recover_seconds", "seconds",
    ):  # fmt: skip
        assert name in line
    assert line["drift"] == 1
    assert line["unexpected_dead_letters"][0]["key"] == "order:FM-7"
    assert not result.ok
    text = summary(result)
    assert "missing in index: order:FM-7" in text
    assert "different:        order:FM-8 ['customer_address', 'order_status']" in text
    assert "UNEXPECTED DEAD LETTERS" in text
    assert "PLANTED POISON NOT DEAD-LETTERED" in text
    assert "--seed 4" in text


def test_frontiers_moving_back_are_recorded() -> None:
    frontier = Frontier(cast(ChaosStack, None))
    frontier.check([5] * PARTITIONS, 10)
    frontier.check([6] * PARTITIONS, 12)
    assert frontier.violations == []
    frontier.check([6, 4, *[7] * (PARTITIONS - 2)], 11)
    assert [v.split(" ", 1)[1] for v in frontier.violations] == [
        "checkpoint moved back from 12 to 11",
        "p1 applied_ts moved back from 6 to 4",
    ]
