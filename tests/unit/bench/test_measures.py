"""The benches' pure measuring rules: when an entry counts as acknowledged, weighted
percentiles, /proc parsing, when a change counts as searchable. No services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.acktimer import acknowledged_below, id_key, weighted_percentiles_ms
from bench.processes import cpu_ticks
from devstack.searchable import Tracker, reached


def test_with_nothing_pending_everything_delivered_is_acknowledged() -> None:
    assert acknowledged_below(b"1700-3", 0, None) == ((1700, 3), True)


def test_a_pending_entry_holds_back_itself_and_everything_after_it() -> None:
    assert acknowledged_below(b"1700-3", 2, b"1690-0") == ((1690, 0), False)


def test_entry_ids_compare_as_numbers_not_text() -> None:
    assert id_key(b"999-10") < id_key(b"1000-2")
    assert id_key("5-10") > id_key("5-9")


@given(st.lists(st.tuples(st.floats(0, 100), st.integers(1, 50)), min_size=1))
def test_weighted_percentiles_are_ordered_and_within_the_samples(
    samples: list[tuple[float, int]],
) -> None:
    result = weighted_percentiles_ms(samples)
    low, high = min(s for s, _ in samples) * 1000, max(s for s, _ in samples) * 1000
    p50, p95, p99 = result["p50_ms"], result["p95_ms"], result["p99_ms"]
    assert isinstance(p50, float) and isinstance(p95, float) and isinstance(p99, float)
    assert low - 0.1 <= p50 <= p95 <= p99 <= high + 0.1
    assert result["changes"] == sum(count for _, count in samples)


def test_a_sample_counts_as_many_times_as_it_has_changes() -> None:
    # one entry of 99 changes at 10 ms and one of 1 change at 900 ms: p95 is 10 ms
    result = weighted_percentiles_ms([(0.010, 99), (0.900, 1)])
    assert result["p95_ms"] == 10.0 and result["p99_ms"] == 10.0


def test_cpu_ticks_counts_fields_after_a_command_name_with_spaces() -> None:
    stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 10 0 0 0 17 5 0 0 20 0 1 0"
    assert cpu_ticks(stat) == 22


def test_a_change_is_searchable_when_every_order_shows_its_version() -> None:
    assert reached({"o1": 2_000, "o2": 2_500}, ["o1", "o2"], 2.0, deleted=False)
    assert not reached({"o1": 2_000, "o2": 1_999}, ["o1", "o2"], 2.0, deleted=False)
    assert not reached({"o1": 2_000}, ["o1", "o2"], 2.0, deleted=False)


def test_a_delete_is_searchable_when_no_order_is_found() -> None:
    assert reached({}, ["o1"], 2.0, deleted=True)
    assert not reached({"o1": 1}, ["o1"], 2.0, deleted=True)


def _tracker(tmp_path: Path, *changes: tuple[list[str], float, bool]) -> Tracker:
    record = tmp_path / "record.jsonl"
    with record.open("w") as out:
        for order_ids, commit_ts, deleted in changes:
            line = {"kind": "k", "order_ids": order_ids, "sent_ts": commit_ts - 0.01,
                    "commit_ts": commit_ts, "deleted": deleted}  # fmt: skip
            out.write(json.dumps(line) + "\n")
    tracker = Tracker(search=None, index="orders", record=record)  # type: ignore[arg-type]
    tracker.read_new()
    return tracker


def test_the_searchable_latency_splits_at_the_changes_timestamp(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path, (["o1"], 10.0, False), (["o2"], 10.2, False))
    tracker.settle({}, {"o1": 10_500}, seen=11.7)

    assert tracker.searchable == [pytest.approx(1.7)]
    assert tracker.commit_to_ts == [pytest.approx(0.5)]
    assert tracker.ts_to_searchable == [pytest.approx(1.2)]
    assert list(tracker.pending) == [2]


def test_a_change_a_later_change_of_its_order_may_hide_is_left_out_of_the_split(
    tmp_path: Path,
) -> None:
    # the version a search shows for o1 may be the second change's timestamp
    tracker = _tracker(tmp_path, (["o1"], 10.0, False), (["o1", "o3"], 10.3, False))
    tracker.settle({}, {"o1": 11_000, "o3": 11_000}, seen=12.0)

    assert tracker.searchable == [pytest.approx(2.0), pytest.approx(1.7)]
    assert tracker.commit_to_ts == [pytest.approx(0.7)]  # the second change alone
    assert tracker.ts_to_searchable == [pytest.approx(1.0)]
    assert not tracker.pending and not tracker._watch
