"""The FreshMart triple model: subject-id conventions, predicates, value types.

Every fact is one row of ``triples``: ``(subject_id, predicate, object_value,
object_type)``. Subject ids are ``<entity>:<local id>``; the part before the colon
names the entity kind, which is how the Materialize emulator maps a touched
subject to the order keys it affects, so the prefixes below are a contract:

==========  ========================  =============================================
entity      subject id                predicates
==========  ========================  =============================================
order       ``order:FM-1001``         order_number, order_status, order_store,
                                      placed_by, delivery_window_start,
                                      delivery_window_end
orderline   ``orderline:FM-1001-2``   line_of_order, line_product, quantity,
                                      order_line_unit_price
customer    ``customer:C-17``         customer_name, customer_email, customer_address
store       ``store:S-3``             store_name, store_zone, store_address
task        ``task:T-FM-1001``        task_of_order, assigned_to, task_status, eta
courier     ``courier:K-12``          courier_name
==========  ========================  =============================================

Order lines and tasks point at their order (``line_of_order``/``task_of_order``
hold the order's subject id); an order points at its store and customer.
Timestamps are ISO 8601 text with an explicit UTC offset, so casting them to
``timestamptz`` does not depend on the session's TimeZone; decimals are plain
text with two fractional digits.

Pure module: no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "ORDER_STATUSES",
    "TASK_STATUSES",
    "EntityKind",
    "ObjectType",
    "Triple",
    "courier_id",
    "customer_id",
    "entity_kind",
    "line_id",
    "order_id",
    "order_id_of_line",
    "order_id_of_task",
    "order_number",
    "store_id",
    "task_id",
]


class EntityKind(StrEnum):
    ORDER = "order"
    ORDERLINE = "orderline"
    CUSTOMER = "customer"
    STORE = "store"
    TASK = "task"
    COURIER = "courier"


class ObjectType(StrEnum):
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    TIMESTAMP = "timestamp"
    ENTITY_REF = "entity_ref"


class Triple(NamedTuple):
    """One row of ``triples`` as writers produce it (ids and timestamps come from the database)."""

    subject_id: str
    predicate: str
    object_value: str | None
    object_type: ObjectType


# Order lifecycle, in the order an order moves through it; cancelled is terminal.
ORDER_STATUSES = ("placed", "picking", "out_for_delivery", "delivered", "cancelled")
# A task follows its order: pending (no courier yet) -> assigned -> in_progress -> completed.
TASK_STATUSES = ("pending", "assigned", "in_progress", "completed", "cancelled")


def order_number(n: int) -> str:
    """The human-readable order number of the n-th order, e.g. ``FM-1001``."""
    return f"FM-{n}"


def order_id(number: str) -> str:
    return f"order:{number}"


def line_id(number: str, line: int) -> str:
    return f"orderline:{number}-{line}"


def task_id(number: str) -> str:
    return f"task:T-{number}"


def customer_id(n: int) -> str:
    return f"customer:C-{n}"


def store_id(n: int) -> str:
    return f"store:S-{n}"


def courier_id(n: int) -> str:
    return f"courier:K-{n}"


def entity_kind(subject_id: str) -> str:
    """The prefix before the first colon (``"order"`` for ``order:FM-1001``)."""
    return subject_id.partition(":")[0]


def order_id_of_line(line_subject: str) -> str:
    """``orderline:FM-1001-2`` -> ``order:FM-1001`` (by naming convention, no lookup).

    Raises ValueError if ``line_subject`` is not an orderline id.
    """
    kind, _, local = line_subject.partition(":")
    number, sep, line = local.rpartition("-")
    if kind != EntityKind.ORDERLINE or not sep or not number or not line.isdigit():
        raise ValueError(f"not an orderline subject id: {line_subject!r}")
    return order_id(number)


def order_id_of_task(task_subject: str) -> str:
    """``task:T-FM-1001`` -> ``order:FM-1001`` (by naming convention, no lookup).

    Raises ValueError if ``task_subject`` is not a task id of this convention.
    """
    kind, _, local = task_subject.partition(":")
    if kind != EntityKind.TASK or not local.startswith("T-") or len(local) <= 2:
        raise ValueError(f"not a task subject id: {task_subject!r}")
    return order_id(local[2:])
