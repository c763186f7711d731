"""The benches' documents: FreshMart orders as the producer encodes them (18 view
columns + ``sync_version``, ~700 bytes of JSON), deterministic for a seed."""

from __future__ import annotations

import random
import time

import msgspec

__all__ = ["order_document"]

STATUSES = ["PLACED", "PICKING", "PACKED", "OUT_FOR_DELIVERY", "DELIVERED", "CANCELLED"]
TASKS = ["PENDING", "ASSIGNED", "IN_PROGRESS", "COMPLETED"]
ZONES = ["NORTH", "SOUTH", "EAST", "WEST", "DOWNTOWN", "AIRPORT"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
STREETS = ["Maple Avenue", "Harbour Road", "Station Street", "Orchard Lane", "Mill Close"]


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ms / 1000))


def order_document(n: int, ts: int, rnd: random.Random) -> tuple[bytes, bytes]:
    """One row of orders_search_source_mv as the producer encodes it, with its key."""
    key = f"order:FM-{100000 + n}"
    window = ts - rnd.randrange(3_600_000, 86_400_000)
    customer = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
    doc = {
        "order_id": key,
        "order_number": f"FM-{100000 + n}",
        "order_status": rnd.choice(STATUSES),
        "store_id": f"store:S-{rnd.randrange(1, 60)}",
        "customer_id": f"customer:C-{rnd.randrange(1, 50000)}",
        "delivery_window_start": iso(window),
        "delivery_window_end": iso(window + 7_200_000),
        "order_total_amount": round(rnd.uniform(5, 400), 2),
        "customer_name": customer,
        "customer_email": customer.lower().replace(" ", ".") + "@example.com",
        "customer_address": f"{rnd.randrange(1, 999)} {rnd.choice(STREETS)}, Springfield",
        "store_name": f"FreshMart {rnd.choice(ZONES).title()} #{rnd.randrange(1, 60)}",
        "store_zone": rnd.choice(ZONES),
        "store_address": f"{rnd.randrange(1, 300)} {rnd.choice(STREETS)}, Springfield",
        "assigned_courier_id": f"courier:K-{rnd.randrange(1, 500)}",
        "delivery_task_status": rnd.choice(TASKS),
        "delivery_eta": iso(window + 3_600_000),
        "effective_updated_at": iso(ts),
        "sync_version": ts,
    }
    return key.encode(), msgspec.json.encode(doc)
