"""Bulk-load a FreshMart data set into ``triples``.

``generate_triples`` is pure and deterministic: the same (orders, seed, as_of)
gives the same triples in the same order. ``seed_database`` streams them into
PostgreSQL with COPY; into an empty table it drops the secondary indexes first
and rebuilds them after the load (one sort instead of a million index inserts),
all in one transaction so readers see either the old table or the full new one.
It ends with VACUUM ANALYZE: statistics for the planner, and a visibility map for
the view's index-only scans.

Command line (``devstack/seed``)::

    devstack/seed --orders N [--seed S] [--schema public] [--truncate] [--as-of ISO]

Shape of the data: ~1 customer per 5 orders, 5 stores per 2,000 orders (5 to
20, spread over the 5 zones), 1 courier per 50 orders; 1-6 lines per order
(mean 3.5); order statuses placed 15 %, picking 12 %, out_for_delivery 13 %,
delivered 50 %, cancelled 10 %; one task per non-cancelled order, with a courier
once the order is being picked.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from devstack.freshmart import names
from devstack.freshmart.model import (
    ObjectType,
    Triple,
    courier_id,
    customer_id,
    line_id,
    order_id,
    order_number,
    store_id,
    task_id,
)
from devstack.freshmart.schema import (
    apply_schema,
    create_secondary_indexes,
    drop_secondary_indexes,
)

__all__ = [
    "FIRST_ORDER_NUMBER",
    "SeedReport",
    "SeedSizes",
    "customer_triples",
    "format_decimal",
    "format_ts",
    "generate_triples",
    "order_triples",
    "seed_database",
    "seed_sizes",
]

FIRST_ORDER_NUMBER = 1001
_S, _I, _D, _T, _R = (
    ObjectType.STRING,
    ObjectType.INT,
    ObjectType.DECIMAL,
    ObjectType.TIMESTAMP,
    ObjectType.ENTITY_REF,
)
_STATUS_WEIGHTS = (
    ("placed", 15),
    ("picking", 12),
    ("out_for_delivery", 13),
    ("delivered", 50),
    ("cancelled", 10),
)
_TASK_STATUS = {
    "placed": "pending",
    "picking": "assigned",
    "out_for_delivery": "in_progress",
    "delivered": "completed",
}


@dataclass(frozen=True, slots=True)
class SeedSizes:
    orders: int
    customers: int
    stores: int
    couriers: int


def seed_sizes(orders: int) -> SeedSizes:
    """How many of each entity a data set of ``orders`` orders has."""
    return SeedSizes(
        orders=orders,
        customers=max(1, orders // 5),
        stores=5 * (1 + min(3, orders // 2000)),
        couriers=max(3, orders // 50),
    )


def format_ts(moment: datetime) -> str:
    """ISO 8601 with an explicit offset (``2025-01-31T09:30:00+00:00``)."""
    return moment.isoformat(timespec="seconds")


def format_decimal(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(names.FIRST_NAMES), rng.choice(names.LAST_NAMES)


def street_address(rng: random.Random, zone: str) -> str:
    """A street address in ``zone``, e.g. ``"417 Maple Ave, Oak Park, IL 60302"``."""
    city, zip_prefix = rng.choice(names.ZONES[zone])
    return (
        f"{rng.randint(1, 9899)} {rng.choice(names.STREET_NAMES)} "
        f"{rng.choice(names.STREET_SUFFIXES)}, {city}, {names.STATE_CODE} "
        f"{zip_prefix}{rng.randint(1, 99):02d}"
    )


def customer_triples(rng: random.Random, n: int, zone: str) -> list[Triple]:
    """The three facts of customer number ``n`` living in ``zone``."""
    first, last = _person(rng)
    subject = customer_id(n)
    email = f"{first}.{last}{n}@{rng.choice(names.EMAIL_DOMAINS)}".lower()
    return [
        Triple(subject, "customer_name", f"{first} {last}", _S),
        Triple(subject, "customer_email", email, _S),
        Triple(subject, "customer_address", street_address(rng, zone), _S),
    ]


def order_triples(
    rng: random.Random,
    *,
    number: str,
    status: str,
    customer: str,
    store: str,
    window_start: datetime,
    courier: str | None = None,
) -> list[Triple]:
    """An order with 1-6 lines and, unless cancelled, its delivery task.

    The task's status follows the order's; it has a courier from ``picking`` on
    (``courier`` is ignored before that) and an ETA once a courier is assigned.
    """
    subject = order_id(number)
    window_end = window_start + timedelta(hours=rng.choice((1, 1, 2)))
    rows = [
        Triple(subject, "order_number", number, _S),
        Triple(subject, "order_status", status, _S),
        Triple(subject, "order_store", store, _R),
        Triple(subject, "placed_by", customer, _R),
        Triple(subject, "delivery_window_start", format_ts(window_start), _T),
        Triple(subject, "delivery_window_end", format_ts(window_end), _T),
    ]
    for line in range(1, rng.randint(1, 6) + 1):
        product, cents = rng.choice(names.PRODUCTS)
        if rng.random() < 0.1:  # a promotion: 10 % off
            cents = cents * 9 // 10
        line_subject = line_id(number, line)
        rows += [
            Triple(line_subject, "line_of_order", subject, _R),
            Triple(line_subject, "line_product", product, _S),
            Triple(line_subject, "quantity", str(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))), _I),
            Triple(line_subject, "order_line_unit_price", format_decimal(cents), _D),
        ]
    task_status = _TASK_STATUS.get(status)
    if task_status is not None:
        task = task_id(number)
        rows += [
            Triple(task, "task_of_order", subject, _R),
            Triple(task, "task_status", task_status, _S),
        ]
        if task_status != "pending" and courier is not None:
            eta = window_start + timedelta(minutes=rng.randint(0, 59))
            rows += [
                Triple(task, "assigned_to", courier, _R),
                Triple(task, "eta", format_ts(eta), _T),
            ]
    return rows


def _window_start(rng: random.Random, status: str, as_of: datetime) -> datetime:
    # Past windows for finished orders, imminent ones for orders in flight,
    # upcoming ones for new orders; always on a half hour, as shops book them.
    hour = as_of.replace(minute=0, second=0, microsecond=0)
    slots = {
        "delivered": (-14 * 48, -2),
        "cancelled": (-14 * 48, 4 * 48),
        "out_for_delivery": (-2, 0),
        "picking": (0, 6),
        "placed": (2, 4 * 48),
    }[status]
    return hour + timedelta(minutes=30 * rng.randint(*slots))


def generate_triples(orders: int, seed: int, as_of: datetime) -> Iterator[Triple]:
    """Every triple of a data set: stores, couriers, customers, then orders.

    Deterministic in (orders, seed, as_of). ``as_of`` is "now" for the data set:
    delivered orders lie before it, placed ones after. Raises ValueError if
    ``orders`` is negative or ``as_of`` is naive.
    """
    if orders < 0:
        raise ValueError(f"orders must be >= 0, got {orders}")
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    rng = random.Random(seed)
    sizes = seed_sizes(orders)
    zones = list(names.ZONES)
    store_zone = [zones[i % len(zones)] for i in range(sizes.stores)]
    for i in range(sizes.stores):
        subject = store_id(i + 1)
        yield Triple(subject, "store_name", f"FreshMart {names.STORE_NEIGHBOURHOODS[i]}", _S)
        yield Triple(subject, "store_zone", store_zone[i], _S)
        yield Triple(subject, "store_address", street_address(rng, store_zone[i]), _S)
    for i in range(sizes.couriers):
        first, last = _person(rng)
        yield Triple(courier_id(i + 1), "courier_name", f"{first} {last}", _S)
    customer_zone = []
    for i in range(sizes.customers):
        zone = rng.choice(zones)
        customer_zone.append(zone)
        yield from customer_triples(rng, i + 1, zone)
    stores_in_zone = {z: [i + 1 for i, sz in enumerate(store_zone) if sz == z] for z in zones}
    statuses = [s for s, _ in _STATUS_WEIGHTS]
    weights = [w for _, w in _STATUS_WEIGHTS]
    for i in range(orders):
        customer = rng.randrange(sizes.customers)
        # Most customers shop at a store of their own zone.
        if rng.random() < 0.85:
            store = rng.choice(stores_in_zone[customer_zone[customer]])
        else:
            store = rng.randint(1, sizes.stores)
        status = rng.choices(statuses, weights)[0]
        yield from order_triples(
            rng,
            number=order_number(FIRST_ORDER_NUMBER + i),
            status=status,
            customer=customer_id(customer + 1),
            store=store_id(store),
            window_start=_window_start(rng, status, as_of),
            courier=courier_id(rng.randint(1, sizes.couriers)),
        )


@dataclass(frozen=True, slots=True)
class SeedReport:
    triples: int
    orders: int
    seconds: float
    copy_seconds: float
    index_seconds: float
    analyze_seconds: float


def seed_database(
    conn: psycopg.Connection[object],
    *,
    orders: int,
    seed: int,
    as_of: datetime,
    schema: str = "public",
    truncate: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Apply the schema to ``schema`` and load a generated data set into it.

    ``conn`` must be in autocommit mode (VACUUM cannot run in a transaction).
    Without ``truncate`` the table must be empty: the generated ids would
    collide with existing ones. Raises ValueError for a non-empty table or a
    connection not in autocommit; psycopg.Error for database failures (the load
    is one transaction, so a failure leaves the table as it was). Blocks while
    other sessions hold locks on the table (TRUNCATE/DROP INDEX need exclusive).
    """
    if not conn.autocommit:
        raise ValueError("seed_database needs an autocommit connection")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    apply_schema(conn, schema)
    table = sql.Identifier(schema, "triples")
    count = 0
    with conn.transaction():
        if truncate:
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(table))
        elif conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(table)).fetchone() == (
            True,
        ):
            raise ValueError(f"{schema}.triples is not empty: pass truncate=True (--truncate)")
        # Empty now, so a rebuild after the load costs less than index upkeep per row.
        drop_secondary_indexes(conn, schema)
        copy_started = time.perf_counter()
        copy_sql = sql.SQL(
            "COPY {} (subject_id, predicate, object_value, object_type) FROM STDIN"
        ).format(table)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in generate_triples(orders, seed, as_of):
                copy.write_row(row)
                count += 1
                if count % 200_000 == 0:
                    say(f"copied {count} triples ({time.perf_counter() - copy_started:.1f}s)")
        copy_seconds = time.perf_counter() - copy_started
        say(f"copied {count} triples in {copy_seconds:.1f}s; building indexes")
        index_started = time.perf_counter()
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        create_secondary_indexes(conn, schema)
        index_seconds = time.perf_counter() - index_started
    analyze_started = time.perf_counter()
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
    analyze_seconds = time.perf_counter() - analyze_started
    return SeedReport(
        triples=count,
        orders=orders,
        seconds=time.perf_counter() - started,
        copy_seconds=copy_seconds,
        index_seconds=index_seconds,
        analyze_seconds=analyze_seconds,
    )


def _parse_as_of(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devstack/seed", description="Load a generated FreshMart data set."
    )
    parser.add_argument("--orders", type=int, required=True, help="number of orders")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--schema", default="public", help="target schema (default: public)")
    parser.add_argument("--truncate", action="store_true", help="empty triples first")
    parser.add_argument(
        "--as-of",
        type=_parse_as_of,
        default=None,
        help="the data set's 'now', ISO 8601 (default: this hour, UTC); pin it with --seed "
        "for a reproducible data set",
    )
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""))
    args = parser.parse_args(argv)
    if args.orders < 0:
        parser.error("--orders must be >= 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    as_of = args.as_of or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(
        f"seeding {args.orders} orders into {args.schema}.triples "
        f"(--seed {seed} --as-of {as_of.isoformat()})",
        flush=True,
    )
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            report = seed_database(
                conn,
                orders=args.orders,
                seed=seed,
                as_of=as_of,
                schema=args.schema,
                truncate=args.truncate,
                progress=lambda msg: print(msg, flush=True),
            )
    except (ValueError, psycopg.Error) as exc:
        print(f"seed failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"seeded {report.orders} orders, {report.triples} triples in {report.seconds:.1f}s "
        f"(copy {report.copy_seconds:.1f}s, indexes {report.index_seconds:.1f}s, "
        f"vacuum analyze {report.analyze_seconds:.1f}s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
