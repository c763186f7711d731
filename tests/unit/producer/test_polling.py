"""producer/polling.py: one poll's changes from changed rows and the key sets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.polling import plan_poll


def test_changed_rows_upsert_and_vanished_keys_delete() -> None:
    plan = plan_poll(
        100,
        [("o1", ("o1", "new")), ("o3", ("o3", "x"))],
        current_keys={"o1", "o3", "o4"},
        previous_keys={"o1", "o2", "o4"},
    )
    assert plan.upserts == [("o1", ("o1", "new")), ("o3", ("o3", "x"))]
    assert plan.deletes == ["o2"]
    assert plan.added == {"o3"}
    assert plan.removed == {"o2"}
    assert plan.version == 100


def test_two_rows_for_a_key_is_a_violation() -> None:
    plan = plan_poll(1, [("o1", ("a",)), ("o1", ("b",))], {"o1"}, set())
    assert plan.upserts == []
    assert plan.violations == [("o1", [("a",), ("b",)])]


@given(
    st.sets(st.sampled_from([f"k{i}" for i in range(12)])),
    st.sets(st.sampled_from([f"k{i}" for i in range(12)])),
)
def test_key_set_delta_turns_previous_into_current(previous: set[str], current: set[str]) -> None:
    plan = plan_poll(1, [], current, previous)
    assert (previous - plan.removed) | plan.added == current
    assert set(plan.deletes) == previous - current
