"""devstack/freshmart/model.py: the subject-id convention other components rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.freshmart.model import (
    EntityKind,
    courier_id,
    customer_id,
    entity_kind,
    line_id,
    order_id,
    order_id_of_line,
    order_id_of_task,
    order_number,
    store_id,
    task_id,
)


def test_ids_follow_the_prefix_colon_convention() -> None:
    number = order_number(1001)
    assert number == "FM-1001"
    assert order_id(number) == "order:FM-1001"
    assert line_id(number, 2) == "orderline:FM-1001-2"
    assert task_id(number) == "task:T-FM-1001"
    assert customer_id(17) == "customer:C-17"
    assert store_id(3) == "store:S-3"
    assert courier_id(12) == "courier:K-12"


@given(st.integers(1, 10**9), st.integers(1, 99))
def test_lines_and_tasks_map_back_to_their_order(n: int, line: int) -> None:
    number = order_number(n)
    assert order_id_of_line(line_id(number, line)) == order_id(number)
    assert order_id_of_task(task_id(number)) == order_id(number)
    assert entity_kind(line_id(number, line)) == EntityKind.ORDERLINE
    assert entity_kind(task_id(number)) == EntityKind.TASK
    assert entity_kind(order_id(number)) == EntityKind.ORDER


@pytest.mark.parametrize("bad", ["order:FM-1", "orderline:FM", "orderline:FM-1-x", "line:FM-1-2"])
def test_order_id_of_line_rejects_other_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        order_id_of_line(bad)


@pytest.mark.parametrize("bad", ["order:FM-1", "task:FM-1", "task:T-", "courier:T-FM-1"])
def test_order_id_of_task_rejects_other_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        order_id_of_task(bad)
