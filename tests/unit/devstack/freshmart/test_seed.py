"""devstack/freshmart/seed.py: the generated data set (pure part, no database)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.freshmart.model import ORDER_STATUSES, EntityKind, ObjectType, Triple, entity_kind
from devstack.freshmart.seed import format_decimal, generate_triples, seed_sizes

AS_OF = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
TASK_STATUS_OF = {
    "placed": "pending",
    "picking": "assigned",
    "out_for_delivery": "in_progress",
    "delivered": "completed",
}


def _facts(triples: list[Triple]) -> dict[str, dict[str, Triple]]:
    by_subject: dict[str, dict[str, Triple]] = defaultdict(dict)
    for t in triples:
        assert t.predicate not in by_subject[t.subject_id], f"duplicate {t}"
        by_subject[t.subject_id][t.predicate] = t
    return by_subject


@pytest.fixture(scope="module")
def big() -> list[Triple]:
    return list(generate_triples(2000, seed=11, as_of=AS_OF))


def test_same_seed_same_triples_other_seed_other_triples() -> None:
    a = list(generate_triples(60, seed=3, as_of=AS_OF))
    assert a == list(generate_triples(60, seed=3, as_of=AS_OF))
    assert a != list(generate_triples(60, seed=4, as_of=AS_OF))


def test_entity_counts_match_seed_sizes(big: list[Triple]) -> None:
    sizes = seed_sizes(2000)
    kinds = Counter(entity_kind(s) for s in _facts(big))
    assert kinds[EntityKind.ORDER] == 2000
    assert kinds[EntityKind.CUSTOMER] == sizes.customers
    assert kinds[EntityKind.STORE] == sizes.stores
    assert kinds[EntityKind.COURIER] == sizes.couriers
    cancelled = sum(
        1 for t in big if t.predicate == "order_status" and t.object_value == "cancelled"
    )
    assert kinds[EntityKind.TASK] == 2000 - cancelled


def test_references_point_at_existing_subjects_of_the_right_kind(big: list[Triple]) -> None:
    subjects = _facts(big)
    expected_kind = {
        "order_store": "store",
        "placed_by": "customer",
        "line_of_order": "order",
        "task_of_order": "order",
        "assigned_to": "courier",
    }
    for t in big:
        if t.object_type == ObjectType.ENTITY_REF:
            assert t.object_value in subjects, t
            assert entity_kind(t.object_value) == expected_kind[t.predicate], t


def test_values_parse_as_their_object_type(big: list[Triple]) -> None:
    for t in big:
        assert t.object_value is not None
        if t.object_type == ObjectType.INT:
            assert int(t.object_value) > 0
        elif t.object_type == ObjectType.DECIMAL:
            assert Decimal(t.object_value).as_tuple().exponent == -2
            assert Decimal(t.object_value) > 0
        elif t.object_type == ObjectType.TIMESTAMP:
            assert datetime.fromisoformat(t.object_value).tzinfo is not None


def test_orders_have_lines_a_task_when_active_and_a_status_mix(big: list[Triple]) -> None:
    subjects = _facts(big)
    lines: Counter[str] = Counter()
    tasks: dict[str, dict[str, Triple]] = {}
    for facts in subjects.values():
        if "line_of_order" in facts:
            assert set(facts) == {
                "line_of_order",
                "line_product",
                "quantity",
                "order_line_unit_price",
            }
            lines[str(facts["line_of_order"].object_value)] += 1
        if "task_of_order" in facts:
            tasks[str(facts["task_of_order"].object_value)] = facts
    statuses: Counter[str] = Counter()
    for subject, facts in subjects.items():
        if entity_kind(subject) != EntityKind.ORDER:
            continue
        status = str(facts["order_status"].object_value)
        statuses[status] += 1
        assert 1 <= lines[subject] <= 6
        start = datetime.fromisoformat(str(facts["delivery_window_start"].object_value))
        end = datetime.fromisoformat(str(facts["delivery_window_end"].object_value))
        assert start < end
        task = tasks.get(subject)
        if status == "cancelled":
            assert task is None
            continue
        assert task is not None
        task_status = task["task_status"].object_value
        assert task_status == TASK_STATUS_OF[status]
        # a courier (and an ETA) from picking on, none while pending
        assert ("assigned_to" in task) == (task_status != "pending")
        assert ("eta" in task) == (task_status != "pending")
        if status == "delivered":  # delivered (the ETA is the delivery time) before "now"
            assert datetime.fromisoformat(str(task["eta"].object_value)) < AS_OF
        if status == "placed":
            assert start > AS_OF
    assert set(statuses) == set(ORDER_STATUSES)
    assert 0.05 < statuses["cancelled"] / 2000 < 0.15
    assert 0.4 < statuses["delivered"] / 2000 < 0.6
    assert 3.3 < sum(lines.values()) / 2000 < 3.7


def test_customers_have_distinct_emails_and_full_addresses(big: list[Triple]) -> None:
    emails = [t.object_value for t in big if t.predicate == "customer_email"]
    assert len(emails) == len(set(emails))
    for t in big:
        if t.predicate in ("customer_address", "store_address"):
            street, city, state_zip = str(t.object_value).split(", ")
            assert street.split(" ", 1)[0].isdigit() and city
            assert state_zip.startswith("IL ") and len(state_zip) == 8


def test_five_zones_are_all_used(big: list[Triple]) -> None:
    zones = {t.object_value for t in big if t.predicate == "store_zone"}
    assert zones == {"north", "south", "east", "west", "central"}


@given(st.integers(0, 10**9))
def test_format_decimal_round_trips_cents(cents: int) -> None:
    text = format_decimal(cents)
    assert Decimal(text) * 100 == cents
    assert len(text.rsplit(".", 1)[1]) == 2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        list(generate_triples(-1, seed=1, as_of=AS_OF))
    with pytest.raises(ValueError):
        list(generate_triples(1, seed=1, as_of=datetime(2025, 1, 1)))


def test_empty_data_set_still_has_stores_and_couriers() -> None:
    triples = list(generate_triples(0, seed=1, as_of=AS_OF))
    kinds = Counter(entity_kind(s) for s in _facts(triples))
    assert kinds[EntityKind.ORDER] == 0
    assert kinds[EntityKind.STORE] == 5
