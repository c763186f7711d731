"""Resume after compaction at 25,000 orders: snapshot as upserts plus a reconcile marker.

Materialize keeps 1 s of history by default, so a producer that was down longer
finds its AS OF refused; this is the ordinary path and must work at FreshMart
size. Also DISCARD_SNAPSHOT=true, the runbook's behaviour, with its warning.

Services: the devstack PostgreSQL (a private schema seeded with 25,000 orders by
devstack.freshmart.seed), a private emulator and a private redis-server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from searchsync.common.entries import Marker
from tests.support.producer import (
    Stack,
    delete_order,
    set_status,
    stream_changes,
    wait_for,
)

VIEW = Stack.VIEW
ORDERS = 25_000


@pytest.fixture(scope="module")
def big_stack() -> Iterator[Stack]:
    built = Stack(orders=ORDERS, realistic=True, partitions=8)
    try:
        yield built
    finally:
        built.close()


def test_compacted_history_at_25000_orders_reconciles(big_stack: Stack) -> None:
    stack = big_stack
    client = stack.sync_redis()
    producer = stack.producer(STREAM_PARTITIONS="8")
    producer.wait_log(f"Snapshot complete for {VIEW}: {ORDERS} rows", timeout=120)
    wait_for(lambda: client.get(stack.keys.checkpoint), 10, "checkpoint")
    assert producer.terminate(timeout=5) == 0
    first = {c.ts for c in stream_changes(client, stack.keys)[0]}
    assert len(first) == 1

    # While the producer is down: an order disappears, another changes; history is compacted.
    with stack.pg() as pg:
        doomed, changed = (
            row[0]
            for row in pg.execute(
                f"SELECT order_id FROM {VIEW} ORDER BY order_id LIMIT 2"
            ).fetchall()
        )
    delete_order(stack, doomed.removeprefix("order:FM-"))
    set_status(stack, changed, "cancelled")
    stack.emulator.admin("mzemu_tick()")
    stack.emulator.admin("mzemu_compact()")

    restarted = stack.producer(STREAM_PARTITIONS="8")
    restarted.wait_log(f"Snapshot complete for {VIEW}: {ORDERS - 1} rows", timeout=120)
    log = restarted.log()
    assert "[WARNING] Materialize refused to resume" in log
    assert "RETAIN HISTORY" in log
    changes, markers = stream_changes(client, stack.keys)
    [snapshot_ts] = {c.ts for c in changes} - first
    snapshot = {c.key: c for c in changes if c.ts == snapshot_ts}
    assert len(snapshot) == ORDERS - 1
    assert doomed.encode() not in snapshot
    assert b'"order_status":"cancelled"' in (snapshot[changed.encode()].doc or b"")
    assert markers.count(Marker(b"r", snapshot_ts)) == 8  # one per partition
    assert client.hget(stack.keys.reconcile, str(snapshot_ts)) == b"pending"
    wait_for(lambda: int(client.get(stack.keys.checkpoint) or 0) > snapshot_ts, 10, "checkpoint")
    assert restarted.terminate(timeout=5) == 0


def test_discard_snapshot_streams_changes_only_and_warns(big_stack: Stack) -> None:
    stack = big_stack
    client = stack.sync_redis()
    before = {(c.ts, c.key) for c in stream_changes(client, stack.keys)[0]}
    producer = stack.producer(STREAM_PARTITIONS="8", DISCARD_SNAPSHOT="true")
    producer.wait_log("discarding snapshot, streaming changes only")
    assert "[WARNING] DISCARD_SNAPSHOT=true" in producer.log()
    assert "changes made while the producer was down are lost" in producer.log()
    with stack.pg() as pg:
        [(order,)] = pg.execute(f"SELECT order_id FROM {VIEW} ORDER BY order_id DESC LIMIT 1")
    set_status(stack, order, "picking")

    def new_changes() -> set[tuple[int, bytes]]:
        return {(c.ts, c.key) for c in stream_changes(client, stack.keys)[0]} - before

    [(_, key)] = wait_for(new_changes, 20, "the change to arrive")
    assert key == order.encode()  # no snapshot was written, only the change
    assert producer.terminate(timeout=5) == 0
