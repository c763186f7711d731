"""FreshMart change planning for the load generator: pure, no I/O.

Change kinds (:class:`ChangeKind`): a new order with its lines and task (now and
then for a new customer), a status transition (placed -> picking ->
out_for_delivery -> delivered, the task following), a courier assignment, an ETA
update, a customer address edit (which changes the view row of every order of
that customer), a cancellation, and, some changes after a cancellation, the
deletion of every triple of the cancelled order (order, lines, task).

``plan_change(kind, rng, state, now)`` returns a :class:`PlannedChange`: the
triples to replace, insert and delete (:class:`Writes`), the order keys whose
view rows change, and the bookkeeping :meth:`LoadState.absorb` applies once the
change is committed. :func:`write_statement` turns Writes into one SQL statement
(updates are delete + insert of the (subject, predicate) triple). The I/O lives
in :mod:`devstack.freshmart.load`.
"""

from __future__ import annotations

import json
import random
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, LiteralString, TypeVar

from devstack.freshmart import names
from devstack.freshmart.model import (
    ObjectType,
    Triple,
    customer_id,
    order_id,
    order_number,
    task_id,
)
from devstack.freshmart.seed import (
    FIRST_ORDER_NUMBER,
    customer_triples,
    format_ts,
    order_triples,
    street_address,
)

__all__ = [
    "DEFAULT_MIX",
    "DELETE_AFTER_CHANGES",
    "STATE_PREDICATES",
    "ChangeKind",
    "ChangeNotApplicable",
    "ChangeRecord",
    "LoadState",
    "OrderState",
    "PlannedChange",
    "Writes",
    "choose_kind",
    "conflict_keys",
    "customer_with_orders",
    "plan_change",
    "state_from_rows",
    "write_statement",
]


class ChangeKind(StrEnum):
    NEW_ORDER = "new_order"
    STATUS_TRANSITION = "status_transition"
    COURIER_ASSIGNMENT = "courier_assignment"
    ETA_UPDATE = "eta_update"
    ADDRESS_EDIT = "address_edit"
    CANCELLATION = "cancellation"
    DELETION = "deletion"


# Relative weights of the kinds in a run. New orders outnumber deletions, so a long
# run grows the data set slowly (~7 % of changes add an order).
DEFAULT_MIX: Mapping[ChangeKind, int] = {
    ChangeKind.NEW_ORDER: 14,
    ChangeKind.STATUS_TRANSITION: 30,
    ChangeKind.COURIER_ASSIGNMENT: 10,
    ChangeKind.ETA_UPDATE: 30,
    ChangeKind.ADDRESS_EDIT: 2,
    ChangeKind.CANCELLATION: 7,
    ChangeKind.DELETION: 7,
}
# A cancelled order stays visible (as cancelled) for at least this many changes
# before it is deleted.
DELETE_AFTER_CHANGES = 20
_LONG_AGO = -(1 << 62)  # "cancelled at" of orders already cancelled when the state was read
_NEW_CUSTOMER_SHARE = 0.1
_NEXT_STATUS = {"placed": "picking", "picking": "out_for_delivery", "out_for_delivery": "delivered"}
_TASK_STATUS_FOR = {
    "picking": "assigned",
    "out_for_delivery": "in_progress",
    "delivered": "completed",
    "cancelled": "cancelled",
}
_NUMBERED = re.compile(r"^[a-z]+:[A-Z]+-(\d+)$")


class ChangeNotApplicable(LookupError):
    """The state has nothing this kind of change could act on (e.g. no active order)."""


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the generator remembers of one order to plan its next change."""

    order_id: str
    status: str
    customer_id: str
    store_id: str | None = None
    task_id: str | None = None
    task_status: str | None = None
    courier_id: str | None = None
    eta: datetime | None = None


@dataclass(frozen=True, slots=True)
class Writes:
    """The triples one change writes, executed in this order in one transaction.

    ``replace``: delete the (subject_id, predicate) rows, insert these.
    ``delete_orders``: every triple of these orders and of the lines and tasks
    that point at them. ``insert``: new facts of new subjects.
    """

    replace: tuple[Triple, ...] = ()
    delete_orders: tuple[str, ...] = ()
    insert: tuple[Triple, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedChange:
    kind: ChangeKind
    order_ids: tuple[str, ...]  # the view rows (order keys) this change alters
    deleted: bool  # True when those rows disappear
    writes: Writes
    upserted_orders: tuple[OrderState, ...] = ()
    removed_orders: tuple[str, ...] = ()
    new_customers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One committed change, as ``--record`` writes it."""

    kind: ChangeKind
    order_ids: tuple[str, ...]
    commit_ts: float  # time.time() right after COMMIT returned
    deleted: bool
    # time.time() right before the change was sent: the commit happened between the
    # two, so a timestamp given to the change upstream (Materialize's) is >= sent_ts
    sent_ts: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": str(self.kind),
                "order_ids": list(self.order_ids),
                "commit_ts": self.commit_ts,
                "deleted": self.deleted,
                "sent_ts": self.sent_ts,
            }
        )


T = TypeVar("T")


class _Bag(Generic[T]):
    """A set with O(1) add, discard and uniform random choice."""

    __slots__ = ("_items", "_pos")

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._items: list[T] = []
        self._pos: dict[T, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: T) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: T) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def choice(self, rng: random.Random) -> T:
        return self._items[rng.randrange(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)


@dataclass
class LoadState:
    """The generator's view of the data set; mutated only by :meth:`absorb`."""

    orders: dict[str, OrderState] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)
    couriers: list[str] = field(default_factory=list)
    customers: _Bag[str] = field(default_factory=_Bag)
    orders_of_customer: dict[str, dict[str, None]] = field(default_factory=dict)
    by_status: dict[str, _Bag[str]] = field(default_factory=dict)
    all_orders: _Bag[str] = field(default_factory=_Bag)
    # (order_id, seq at cancellation), oldest first
    cancelled: deque[tuple[str, int]] = field(default_factory=deque)
    seq: int = 0  # changes absorbed so far
    next_order: int = FIRST_ORDER_NUMBER
    next_customer: int = 1

    def add_order(self, order: OrderState, seq: int | None = None) -> None:
        old = self.orders.get(order.order_id)
        if old is not None:
            self.by_status.get(old.status, _Bag()).discard(old.order_id)
            if old.customer_id != order.customer_id:
                self.orders_of_customer.get(old.customer_id, {}).pop(old.order_id, None)
        self.orders[order.order_id] = order
        self.all_orders.add(order.order_id)
        self.by_status.setdefault(order.status, _Bag()).add(order.order_id)
        self.orders_of_customer.setdefault(order.customer_id, {})[order.order_id] = None
        if order.status == "cancelled" and (old is None or old.status != "cancelled"):
            self.cancelled.append((order.order_id, _LONG_AGO if seq is None else seq))
        number = _number(order.order_id)
        if number is not None:
            self.next_order = max(self.next_order, number + 1)

    def remove_order(self, oid: str) -> None:
        old = self.orders.pop(oid, None)
        if old is None:
            return
        self.all_orders.discard(oid)
        self.by_status.get(old.status, _Bag()).discard(oid)
        self.orders_of_customer.get(old.customer_id, {}).pop(oid, None)

    def add_customer(self, cid: str) -> None:
        self.customers.add(cid)
        self.orders_of_customer.setdefault(cid, {})
        number = _number(cid)
        if number is not None:
            self.next_customer = max(self.next_customer, number + 1)

    def absorb(self, change: PlannedChange) -> None:
        """Record a committed change (call only after its transaction committed)."""
        for cid in change.new_customers:
            self.add_customer(cid)
        for order in change.upserted_orders:
            self.add_order(order, self.seq)
        for oid in change.removed_orders:
            self.remove_order(oid)
        self.seq += 1
        # Forget queue entries of orders deleted or no longer cancelled, from the front.
        while self.cancelled:
            head = self.orders.get(self.cancelled[0][0])
            if head is not None and head.status == "cancelled":
                break
            self.cancelled.popleft()

    def orders_in(self, statuses: Iterable[str]) -> int:
        return sum(len(self.by_status.get(s, ())) for s in statuses)


def _number(subject: str) -> int | None:
    match = _NUMBERED.match(subject)
    return int(match.group(1)) if match else None


def choose_kind(rng: random.Random, mix: Mapping[ChangeKind, int] = DEFAULT_MIX) -> ChangeKind:
    kinds = list(mix)
    return rng.choices(kinds, [mix[k] for k in kinds])[0]


def _pick_order(
    rng: random.Random, state: LoadState, statuses: Iterable[str], *, with_task: bool = False
) -> OrderState:
    bags = [state.by_status[s] for s in statuses if len(state.by_status.get(s, ()))]
    total = sum(len(b) for b in bags)
    # A few tries are enough: orders without a task are rare (other writers only).
    for _ in range(8 if total else 0):
        at = rng.randrange(total)
        for bag in bags:
            if at < len(bag):
                order = state.orders[bag.choice(rng)]
                break
            at -= len(bag)
        if not with_task or order.task_id is not None:
            return order
    raise ChangeNotApplicable(f"no order in status {'/'.join(statuses)}")


def _set(subject: str, predicate: str, value: str, kind: ObjectType) -> Triple:
    return Triple(subject, predicate, value, kind)


def customer_with_orders(state: LoadState, rng: random.Random, min_orders: int = 2) -> str:
    """A random customer who has at least ``min_orders`` orders.

    Raises ChangeNotApplicable if there is none. O(customers).
    """
    candidates = sorted(c for c, o in state.orders_of_customer.items() if len(o) >= min_orders)
    if not candidates:
        raise ChangeNotApplicable(f"no customer with {min_orders} orders")
    return rng.choice(candidates)


def _plan_new_order(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    if not state.stores:
        raise ChangeNotApplicable("no store to order from")
    inserts: list[Triple] = []
    new_customers: tuple[str, ...] = ()
    if not len(state.customers) or rng.random() < _NEW_CUSTOMER_SHARE:
        cid = customer_id(state.next_customer)
        inserts += customer_triples(rng, state.next_customer, rng.choice(list(names.ZONES)))
        new_customers = (cid,)
    else:
        cid = state.customers.choice(rng)
    number = order_number(state.next_order)
    store = rng.choice(state.stores)
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=30 * rng.randint(2, 96))
    inserts += order_triples(
        rng, number=number, status="placed", customer=cid, store=store, window_start=start
    )
    oid = order_id(number)
    order = OrderState(oid, "placed", cid, store, task_id(number), "pending")
    return PlannedChange(
        ChangeKind.NEW_ORDER,
        (oid,),
        False,
        Writes(insert=tuple(inserts)),
        upserted_orders=(order,),
        new_customers=new_customers,
    )


def _plan_status_transition(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    order = _pick_order(rng, state, _NEXT_STATUS)
    status = _NEXT_STATUS[order.status]
    rows = [_set(order.order_id, "order_status", status, ObjectType.STRING)]
    updated = replace(order, status=status)
    if order.task_id is not None:
        task_status = _TASK_STATUS_FOR[status]
        rows.append(_set(order.task_id, "task_status", task_status, ObjectType.STRING))
        courier = order.courier_id
        if courier is None and state.couriers:
            courier = rng.choice(state.couriers)
            rows.append(_set(order.task_id, "assigned_to", courier, ObjectType.ENTITY_REF))
        if status == "delivered":
            eta = now.replace(microsecond=0)
        else:
            eta = now.replace(microsecond=0) + timedelta(minutes=rng.randint(10, 90))
        rows.append(_set(order.task_id, "eta", format_ts(eta), ObjectType.TIMESTAMP))
        updated = replace(updated, task_status=task_status, courier_id=courier, eta=eta)
    return PlannedChange(
        ChangeKind.STATUS_TRANSITION,
        (order.order_id,),
        False,
        Writes(replace=tuple(rows)),
        upserted_orders=(updated,),
    )


def _plan_courier_assignment(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    if len(state.couriers) < 2:
        raise ChangeNotApplicable("fewer than two couriers")
    order = _pick_order(rng, state, ("placed", "picking"), with_task=True)
    assert order.task_id is not None  # with_task
    courier = rng.choice([c for c in state.couriers if c != order.courier_id])
    rows = [_set(order.task_id, "assigned_to", courier, ObjectType.ENTITY_REF)]
    updated = replace(order, courier_id=courier)
    if order.task_status == "pending":
        rows.append(_set(order.task_id, "task_status", "assigned", ObjectType.STRING))
        updated = replace(updated, task_status="assigned")
    if order.eta is None:
        eta = now.replace(microsecond=0) + timedelta(minutes=rng.randint(30, 180))
        rows.append(_set(order.task_id, "eta", format_ts(eta), ObjectType.TIMESTAMP))
        updated = replace(updated, eta=eta)
    return PlannedChange(
        ChangeKind.COURIER_ASSIGNMENT,
        (order.order_id,),
        False,
        Writes(replace=tuple(rows)),
        upserted_orders=(updated,),
    )


def _plan_eta_update(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    order = _pick_order(rng, state, ("picking", "out_for_delivery"), with_task=True)
    assert order.task_id is not None  # with_task
    base = order.eta or now.replace(microsecond=0)
    eta = base + timedelta(minutes=rng.choice((-10, -5, -3, 2, 4, 5, 8, 12, 15, 20)))
    return PlannedChange(
        ChangeKind.ETA_UPDATE,
        (order.order_id,),
        False,
        Writes(replace=(_set(order.task_id, "eta", format_ts(eta), ObjectType.TIMESTAMP),)),
        upserted_orders=(replace(order, eta=eta),),
    )


def _plan_address_edit(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    if not len(state.all_orders):
        raise ChangeNotApplicable("no orders")
    # Through a random order, so customers with many orders are edited more often.
    cid = state.orders[state.all_orders.choice(rng)].customer_id
    if not cid:
        raise ChangeNotApplicable("the order drawn has no customer")
    address = street_address(rng, rng.choice(list(names.ZONES)))
    return PlannedChange(
        ChangeKind.ADDRESS_EDIT,
        tuple(sorted(state.orders_of_customer[cid])),
        False,
        Writes(replace=(_set(cid, "customer_address", address, ObjectType.STRING),)),
    )


def _plan_cancellation(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    order = _pick_order(rng, state, ("placed", "picking"))
    rows = [_set(order.order_id, "order_status", "cancelled", ObjectType.STRING)]
    updated = replace(order, status="cancelled")
    if order.task_id is not None:
        rows.append(_set(order.task_id, "task_status", "cancelled", ObjectType.STRING))
        updated = replace(updated, task_status="cancelled")
    return PlannedChange(
        ChangeKind.CANCELLATION,
        (order.order_id,),
        False,
        Writes(replace=tuple(rows)),
        upserted_orders=(updated,),
    )


def _plan_deletion(rng: random.Random, state: LoadState, now: datetime) -> PlannedChange:
    for oid, cancelled_at in state.cancelled:
        if cancelled_at > state.seq - DELETE_AFTER_CHANGES:
            break  # the queue is in cancellation order: the rest are younger
        order = state.orders.get(oid)
        if order is not None and order.status == "cancelled":
            return PlannedChange(
                ChangeKind.DELETION,
                (oid,),
                True,
                Writes(delete_orders=(oid,)),
                removed_orders=(oid,),
            )
    raise ChangeNotApplicable(f"no order cancelled {DELETE_AFTER_CHANGES} changes ago")


_PLANNERS = {
    ChangeKind.NEW_ORDER: _plan_new_order,
    ChangeKind.STATUS_TRANSITION: _plan_status_transition,
    ChangeKind.COURIER_ASSIGNMENT: _plan_courier_assignment,
    ChangeKind.ETA_UPDATE: _plan_eta_update,
    ChangeKind.ADDRESS_EDIT: _plan_address_edit,
    ChangeKind.CANCELLATION: _plan_cancellation,
    ChangeKind.DELETION: _plan_deletion,
}


def plan_change(
    kind: ChangeKind, rng: random.Random, state: LoadState, now: datetime
) -> PlannedChange:
    """What a change of ``kind`` writes and which view rows it alters. Pure.

    Does not modify ``state`` (only ``rng`` advances). Raises ChangeNotApplicable
    when the state offers nothing to change (e.g. a deletion with no order
    cancelled long enough ago).
    """
    return _PLANNERS[kind](rng, state, now)


_DELETE_REPLACED: LiteralString = (
    "DELETE FROM triples AS t USING unnest(%(rs)s::text[], %(rp)s::text[]) AS k(s, p)"
    " WHERE t.subject_id = k.s AND t.predicate = k.p"
)
_DELETE_ORDERS: LiteralString = (
    # ARRAY(...) keeps this an index scan (an OR with a subquery would be a seq scan).
    "DELETE FROM triples WHERE subject_id = ANY(ARRAY("
    "SELECT unnest(%(o)s::text[]) UNION ALL SELECT r.subject_id FROM triples AS r"
    " WHERE r.predicate IN ('line_of_order', 'task_of_order')"
    " AND r.object_value = ANY(%(o)s::text[])))"
)
_INSERT: LiteralString = (
    "INSERT INTO triples (subject_id, predicate, object_value, object_type)"
    " SELECT * FROM unnest(%(s)s::text[], %(p)s::text[], %(v)s::text[], %(t)s::text[])"
)


def write_statement(writes: Writes) -> tuple[LiteralString, dict[str, list[str | None]]] | None:
    """The one SQL statement, with parameters, that carries out ``writes``. Pure.

    Deletes the (subject_id, predicate) rows of ``writes.replace`` and every
    triple of ``writes.delete_orders`` (the order and the lines and tasks that
    point at it), then inserts ``writes.replace`` and ``writes.insert``. One
    statement is one transaction in autocommit and one round trip; its parts
    share a snapshot, so the deletes cannot see the new rows. Parts with nothing
    to do are left out (statement triggers on ``triples`` fire per part).
    None when ``writes`` is empty.
    """
    params: dict[str, list[str | None]] = {}
    ctes: list[LiteralString] = []
    if writes.replace:
        ctes.append("replaced AS (" + _DELETE_REPLACED + ")")
        params["rs"] = [r.subject_id for r in writes.replace]
        params["rp"] = [r.predicate for r in writes.replace]
    if writes.delete_orders:
        ctes.append("removed AS (" + _DELETE_ORDERS + ")")
        params["o"] = list(writes.delete_orders)
    rows = writes.replace + writes.insert
    if not rows:
        return (_DELETE_ORDERS, params) if writes.delete_orders else None
    params["s"] = [r.subject_id for r in rows]
    params["p"] = [r.predicate for r in rows]
    params["v"] = [r.object_value for r in rows]
    params["t"] = [str(r.object_type) for r in rows]
    return ("WITH " + ", ".join(ctes) + " " + _INSERT if ctes else _INSERT), params


STATE_PREDICATES = [
    "order_status",
    "placed_by",
    "order_store",
    "task_of_order",
    "task_status",
    "assigned_to",
    "eta",
    "customer_name",
    "store_name",
    "courier_name",
]


def state_from_rows(rows: Iterable[tuple[str, str, str | None]]) -> LoadState:
    """Build the generator's state from (subject_id, predicate, object_value) rows. Pure.

    Orders are the subjects with an order_status; of several tasks of one order
    the first is the one the generator changes.
    """
    status: dict[str, str] = {}
    customer: dict[str, str] = {}
    store: dict[str, str] = {}
    task_of: dict[str, str] = {}
    task_facts: dict[str, dict[str, str]] = {}
    state = LoadState()
    for subject, predicate, value in rows:
        if value is None:
            continue
        if predicate == "order_status":
            status[subject] = value
        elif predicate == "placed_by":
            customer[subject] = value
        elif predicate == "order_store":
            store[subject] = value
        elif predicate == "task_of_order":
            task_of.setdefault(value, subject)
        elif predicate in ("task_status", "assigned_to", "eta"):
            task_facts.setdefault(subject, {})[predicate] = value
        elif predicate == "customer_name":
            state.add_customer(subject)
        elif predicate == "store_name":
            state.stores.append(subject)
        elif predicate == "courier_name":
            state.couriers.append(subject)
    for oid, order_status in status.items():
        tid = task_of.get(oid)
        facts = task_facts.get(tid, {}) if tid else {}
        state.add_order(
            OrderState(
                order_id=oid,
                status=order_status,
                customer_id=customer.get(oid, ""),
                store_id=store.get(oid),
                task_id=tid,
                task_status=facts.get("task_status"),
                courier_id=facts.get("assigned_to"),
                eta=_parse_ts(facts.get("eta")),
            )
        )
    return state


def _parse_ts(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:  # written by someone else in another format: plan as if unknown
        return None


def conflict_keys(change: PlannedChange) -> set[str]:
    """The subjects and order keys ``change`` writes or alters. Pure.

    Two changes sharing a key must commit in the order they were planned.
    """
    keys = set(change.order_ids) | set(change.new_customers)
    keys.update(t.subject_id for t in change.writes.replace)
    keys.update(t.subject_id for t in change.writes.insert if t.predicate == "placed_by")
    keys.update(t.object_value or "" for t in change.writes.insert if t.predicate == "placed_by")
    return keys
