"""devstack/freshmart/changes.py: change planning, state bookkeeping, SQL shape (no database).

The property tests run the planners against an in-memory triple store and an
in-memory rendering of the view (values and write versions of the order's,
customer's, store's and task's facts, plus the line total), and check that each
change alters exactly the view rows it claims.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.freshmart.changes import (
    DELETE_AFTER_CHANGES,
    ChangeKind,
    ChangeNotApplicable,
    ChangeRecord,
    LoadState,
    Writes,
    _Bag,
    choose_kind,
    customer_with_orders,
    plan_change,
    state_from_rows,
    write_statement,
)
from devstack.freshmart.model import ObjectType, Triple
from devstack.freshmart.seed import generate_triples

AS_OF = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
# (subject_id, predicate) -> (object_value, write version): the version stands in for updated_at
Store = dict[tuple[str, str], tuple[str | None, int]]


def _store(orders: int, seed: int) -> Store:
    return {
        (t.subject_id, t.predicate): (t.object_value, 0)
        for t in generate_triples(orders, seed=seed, as_of=AS_OF)
    }


def _apply(store: Store, writes: Writes, version: int) -> None:
    for t in writes.replace:
        store.pop((t.subject_id, t.predicate), None)
    for oid in writes.delete_orders:
        doomed = {oid} | {
            s
            for (s, p), (v, _) in store.items()
            if p in ("line_of_order", "task_of_order") and v == oid
        }
        for key in [k for k in store if k[0] in doomed]:
            del store[key]
    for t in writes.replace + writes.insert:
        store[(t.subject_id, t.predicate)] = (t.object_value, version)


def _view(store: Store) -> dict[str, tuple[Any, ...]]:
    facts: dict[str, dict[str, tuple[str | None, int]]] = defaultdict(dict)
    lines: dict[str, list[str]] = defaultdict(list)
    tasks: dict[str, list[str]] = defaultdict(list)
    for (s, p), (v, version) in store.items():
        facts[s][p] = (v, version)
        if p == "line_of_order" and v:
            lines[v].append(s)
        if p == "task_of_order" and v:
            tasks[v].append(s)

    def frozen(subject: str | None) -> tuple[Any, ...]:
        return tuple(sorted(facts.get(subject or "", {}).items()))

    rows: dict[str, tuple[Any, ...]] = {}
    for subject, order in facts.items():
        if "order_number" not in order:
            continue
        total = sum(
            (
                Decimal(str(facts[line]["quantity"][0]))
                * Decimal(str(facts[line]["order_line_unit_price"][0]))
                for line in lines[subject]
            ),
            Decimal(0),
        )
        rows[subject] = (
            frozen(subject),
            frozen(order.get("placed_by", (None, 0))[0]),
            frozen(order.get("order_store", (None, 0))[0]),
            tuple(sorted(frozen(t) for t in tasks[subject])),
            total,
        )
    return rows


def _state(store: Store) -> LoadState:
    return state_from_rows((s, p, v) for (s, p), (v, _) in store.items())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    kinds=st.lists(st.sampled_from(list(ChangeKind)), min_size=1, max_size=60),
)
def test_each_change_alters_exactly_the_rows_it_names(seed: int, kinds: list[ChangeKind]) -> None:
    store = _store(25, seed % 1000)
    state = _state(store)
    rng = random.Random(seed)
    cancelled_at: dict[str, int] = {}
    for version, kind in enumerate(kinds, start=1):
        try:
            change = plan_change(kind, rng, state, AS_OF + timedelta(minutes=version))
        except ChangeNotApplicable:
            continue
        assert change.kind == kind
        before = _view(store)
        _apply(store, change.writes, version)
        after = _view(store)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed == set(change.order_ids), kind
        if change.deleted:
            assert kind == ChangeKind.DELETION
            (oid,) = change.order_ids
            assert oid not in after
            assert not any(oid in (s, v) for (s, _), (v, _) in store.items())
            # cancelled long enough ago (or already cancelled when the state was read)
            assert state.seq - cancelled_at.get(oid, -(10**9)) >= DELETE_AFTER_CHANGES
        else:
            assert set(change.order_ids) <= after.keys()
        if kind == ChangeKind.NEW_ORDER:
            assert not set(change.order_ids) & before.keys()
        if kind == ChangeKind.CANCELLATION:
            cancelled_at[change.order_ids[0]] = state.seq
        state.absorb(change)
    # The bookkeeping kept in step with the data: re-reading gives the same state.
    reread = _state(store)
    assert reread.orders == state.orders
    assert set(reread.customers) == set(state.customers)
    for customer, orders in reread.orders_of_customer.items():
        assert set(orders) == set(state.orders_of_customer.get(customer, {}))
    for status, bag in state.by_status.items():
        assert {o for o in bag} == {o for o, s in reread.orders.items() if s.status == status}


def test_status_transitions_follow_the_lifecycle_and_the_task_follows() -> None:
    state = _state(_store(40, 1))
    rng = random.Random(2)
    expected = {"placed": "picking", "picking": "out_for_delivery", "out_for_delivery": "delivered"}
    task_for = {"picking": "assigned", "out_for_delivery": "in_progress", "delivered": "completed"}
    for _ in range(30):
        change = plan_change(ChangeKind.STATUS_TRANSITION, rng, state, AS_OF)
        (oid,) = change.order_ids
        old, (new,) = state.orders[oid], change.upserted_orders
        assert new.status == expected[old.status]
        written = {(t.subject_id, t.predicate): t.object_value for t in change.writes.replace}
        assert written[(oid, "order_status")] == new.status
        assert written[(str(old.task_id), "task_status")] == task_for[new.status]
        assert new.courier_id is not None
        state.absorb(change)


def test_address_edit_names_every_order_of_the_customer() -> None:
    state = _state(_store(40, 5))
    change = plan_change(ChangeKind.ADDRESS_EDIT, random.Random(1), state, AS_OF)
    (write,) = change.writes.replace
    assert write.predicate == "customer_address"
    assert set(change.order_ids) == set(state.orders_of_customer[write.subject_id])
    assert not change.deleted


def test_deletion_waits_for_changes_after_a_cancellation() -> None:
    state = _state(_store(30, 9))
    for oid in [o for o, s in state.orders.items() if s.status == "cancelled"]:
        state.remove_order(oid)  # no order was cancelled before the run
    rng = random.Random(4)
    with pytest.raises(ChangeNotApplicable):
        plan_change(ChangeKind.DELETION, rng, state, AS_OF)
    cancel = plan_change(ChangeKind.CANCELLATION, rng, state, AS_OF)
    state.absorb(cancel)
    for _ in range(DELETE_AFTER_CHANGES - 1):
        with pytest.raises(ChangeNotApplicable):
            plan_change(ChangeKind.DELETION, rng, state, AS_OF)
        state.absorb(plan_change(ChangeKind.ETA_UPDATE, rng, state, AS_OF))
    deletion = plan_change(ChangeKind.DELETION, rng, state, AS_OF)
    assert deletion.order_ids == cancel.order_ids
    assert deletion.deleted
    assert deletion.writes == Writes(delete_orders=cancel.order_ids)


def test_nothing_to_act_on_is_reported_not_guessed() -> None:
    empty = LoadState()
    rng = random.Random(1)
    for kind in ChangeKind:
        with pytest.raises(ChangeNotApplicable):
            plan_change(kind, rng, empty, AS_OF)
    with pytest.raises(ChangeNotApplicable):
        customer_with_orders(empty, rng)


def test_planning_is_deterministic_for_a_seed() -> None:
    store = _store(30, 3)
    a, b = _state(store), _state(store)
    ra, rb = random.Random(8), random.Random(8)
    for kind in list(ChangeKind) * 3:
        try:
            ca = plan_change(kind, ra, a, AS_OF)
        except ChangeNotApplicable:
            with pytest.raises(ChangeNotApplicable):
                plan_change(kind, rb, b, AS_OF)
            continue
        assert ca == plan_change(kind, rb, b, AS_OF)
        a.absorb(ca)
        b.absorb(ca)


def test_customer_with_orders_has_that_many() -> None:
    state = _state(_store(60, 2))
    rng = random.Random(3)
    for n in (1, 2, 4):
        customer = customer_with_orders(state, rng, min_orders=n)
        assert len(state.orders_of_customer[customer]) >= n


def test_choose_kind_respects_the_mix() -> None:
    rng = random.Random(1)
    mix = {ChangeKind.ETA_UPDATE: 1, ChangeKind.DELETION: 0}
    assert {choose_kind(rng, mix) for _ in range(200)} == {ChangeKind.ETA_UPDATE}


def _t(subject: str, predicate: str, value: str) -> Triple:
    return Triple(subject, predicate, value, ObjectType.STRING)


def test_write_statement_shapes() -> None:
    assert write_statement(Writes()) is None
    insert = write_statement(Writes(insert=(_t("order:FM-1", "order_number", "FM-1"),)))
    assert insert is not None and insert[0].startswith("INSERT")
    delete = write_statement(Writes(delete_orders=("order:FM-1",)))
    assert (
        delete is not None and delete[0].startswith("DELETE") and delete[1] == {"o": ["order:FM-1"]}
    )
    replace = write_statement(
        Writes(
            replace=(_t("order:FM-1", "order_status", "picking"),),
            insert=(_t("customer:C-9", "customer_name", "Ana Lee"),),
        )
    )
    assert replace is not None
    query, params = replace
    assert query.startswith("WITH replaced AS (DELETE")
    assert params["rs"] == ["order:FM-1"] and params["rp"] == ["order_status"]
    # replaced rows are inserted again, with the new ones, in aligned arrays
    assert params["s"] == ["order:FM-1", "customer:C-9"]
    assert params["v"] == ["picking", "Ana Lee"]
    assert params["t"] == ["string", "string"]


def test_change_record_json_has_the_agreed_fields() -> None:
    rec = ChangeRecord(ChangeKind.DELETION, ("order:FM-1",), 1700000000.25, True, 1700000000.2)
    assert rec.to_json() == (
        '{"kind": "deletion", "order_ids": ["order:FM-1"], "commit_ts": 1700000000.25, '
        '"deleted": true, "sent_ts": 1700000000.2}'
    )


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=200), st.integers())
def test_bag_behaves_like_a_set(ops: list[tuple[bool, int]], seed: int) -> None:
    bag: _Bag[int] = _Bag()
    model: set[int] = set()
    rng = random.Random(seed)
    for add, item in ops:
        if add:
            bag.add(item)
            model.add(item)
        else:
            bag.discard(item)
            model.discard(item)
        assert len(bag) == len(model) and set(bag) == model
        if model:
            assert bag.choice(rng) in model
