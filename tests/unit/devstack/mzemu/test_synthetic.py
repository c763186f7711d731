"""devstack.mzemu.synthetic: made-up changes at an exact rate, from the view's own rows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.mzemu.collection import Row
from devstack.mzemu.synthetic import SyntheticChanges


def view(keys: int) -> dict[object, dict[Row, int]]:
    return {
        f"k{n}".encode(): {Row((f"k{n}".encode(), b"PLACED", b"12.50")): 1} for n in range(keys)
    }


VIEW = view(20_000)  # at most 20,000 changes are due in one tick below


@settings(deadline=None)
@given(
    rate=st.integers(1, 20_000),
    tick_ms=st.integers(1, 1000),
    ticks=st.integers(1, 60),
)
def test_the_rate_holds_over_ticks_as_long_as_there_are_keys(
    rate: int, tick_ms: int, ticks: int
) -> None:
    source = SyntheticChanges(rate, column=1)
    made = sum(len(source.rows(VIEW, 1000 + n * tick_ms, set())) for n in range(ticks + 1))
    expected = rate * ticks * tick_ms / 1000
    assert expected - 1 < made <= expected


def test_only_the_chosen_column_changes_and_each_key_once_a_tick() -> None:
    rows = view(10)
    source = SyntheticChanges(1000, column=1)
    source.rows(rows, 1000, set())
    made = source.rows(rows, 1100, set())  # 100 due, only 10 keys
    assert len(made) == 10
    assert len({row.values[0] for row in made}) == 10
    for row in made:
        old = next(iter(rows[row.values[0]]))
        assert row.values[0] == old.values[0] and row.values[2] == old.values[2]
        assert row.values[1] is not None and row.values[1].startswith(b"synthetic 1100 ")


def test_keys_postgresql_changed_in_the_same_tick_are_left_alone() -> None:
    rows = view(5)
    source = SyntheticChanges(1000, column=1)
    source.rows(rows, 1000, set())
    made = source.rows(rows, 1010, {b"k0", b"k1"})
    assert {row.values[0] for row in made} == {b"k2", b"k3", b"k4"}


def test_keys_are_visited_in_turn_across_ticks() -> None:
    rows = view(4)
    source = SyntheticChanges(200, column=1)  # 2 a tick of 10 ms
    source.rows(rows, 1000, set())
    seen = [row.values[0] for n in range(1, 5) for row in source.rows(rows, 1000 + 10 * n, set())]
    assert seen == [b"k0", b"k1", b"k2", b"k3", b"k0", b"k1", b"k2", b"k3"]
