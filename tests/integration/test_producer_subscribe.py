"""The producer process against a private emulator and a private Redis.

Services: the devstack PostgreSQL (a private FreshMart schema per test), a private
Materialize emulator (25 ms ticks, 10 min retention) and a private redis-server.
Each test starts real ``python -m searchsync.producer.main`` processes.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from typing import Any

from searchsync.common.entries import Change, Marker, decode_dead_letter
from tests.support.producer import (
    Stack,
    applied_state,
    delete_order,
    free_port,
    run_producer_once,
    set_status,
    stack_fixture,
    stream_changes,
    view_rows,
    wait_for,
)

VIEW = Stack.VIEW


stack = stack_fixture(orders=6)


def changes_of(stack: Stack) -> list[Change]:
    return stream_changes(stack.sync_redis(), stack.keys)[0]


def wait_change(
    stack: Stack, key: str, predicate: Callable[[Any], bool], what: str
) -> list[Change]:
    """The changes of ``key`` whose decoded document satisfies ``predicate``, once some exist."""

    def found() -> list[Change]:
        return [
            c
            for c in changes_of(stack)
            if c.key == key.encode() and predicate(None if c.doc is None else json.loads(c.doc))
        ]

    matching: list[Change] = wait_for(found, 20, what)
    return matching


def test_first_start_writes_the_snapshot_then_updates_deletes_and_fan_out(stack: Stack) -> None:
    metrics_port = free_port()
    producer = stack.producer(METRICS_PORT=str(metrics_port))
    producer.wait_log(f"Snapshot complete for {VIEW}: 6 rows")
    client = stack.sync_redis()
    changes, markers = stream_changes(client, stack.keys)
    snapshot_ts = {c.ts for c in changes}
    assert len(snapshot_ts) == 1
    [as_of] = snapshot_ts
    expected = view_rows(stack)
    state = applied_state(changes)
    assert {k.decode() for k in state} == set(expected)
    doc = state[b"order:FM-1001"]
    assert doc["sync_version"] == as_of
    # numeric → JSON number: 1 × 2.50 + 2 × 2.50 as seeded
    assert (
        doc["order_total_amount"] == 7.5 == float(expected["order:FM-1001"]["order_total_amount"])
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d", doc["delivery_window_start"]
    )
    # The first start reconciles: a marker at the snapshot's ts in every partition.
    assert Marker(b"r", as_of) in markers
    assert client.hgetall(stack.keys.reconcile) == {str(as_of).encode(): b"pending"}
    wait_for(lambda: int(client.get(stack.keys.checkpoint) or 0) > as_of, 10, "checkpoint")

    set_status(stack, "order:FM-1002", "picking")
    wait_change(stack, "order:FM-1002", lambda d: d and d["order_status"] == "picking", "update")
    delete_order(stack, "1004")
    [deleted] = wait_change(stack, "order:FM-1004", lambda d: d is None, "delete")
    assert deleted.ts > as_of

    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "UPDATE triples SET object_value = '9 New Rd', updated_at = now() "
            "WHERE subject_id = 'customer:C-1' AND predicate = 'customer_address'"
        )
    edits = {}
    for number in (1001, 1003, 1005):  # every order of customer C-1
        [edit] = wait_change(
            stack,
            f"order:FM-{number}",
            lambda d: d and d["customer_address"] == "9 New Rd",
            "address fan-out",
        )
        edits[number] = edit.ts
    assert len(set(edits.values())) == 1, "one transaction, one timestamp"
    state = applied_state(changes_of(stack))
    assert b"order:FM-1004" not in state
    assert state[b"order:FM-1006"]["customer_address"] != "9 New Rd"  # customer C-2

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    assert (
        'searchsync_producer_changes_written_total{op="u",view="orders_search_source_mv"}'
        in metrics
    )
    assert "searchsync_producer_frontier_lag_seconds" in metrics
    assert 'searchsync_producer_snapshots_total{view="orders_search_source_mv"} 1.0' in metrics

    assert producer.terminate(timeout=5) == 0
    assert "Producer stopped" in producer.log()
    for line in (
        "Connected to Materialize for SUBSCRIBE",
        f"Starting SUBSCRIBE for view: {VIEW}",
        f"SUBSCRIBE started for {VIEW}, receiving snapshot...",
        f"Broadcasting 6 changes for {VIEW}",
    ):
        assert line in producer.log()


def test_restart_resumes_exactly_from_the_checkpoint(stack: Stack) -> None:
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 6 rows")
    client = stack.sync_redis()
    wait_for(lambda: client.get(stack.keys.checkpoint), 10, "checkpoint")
    assert producer.terminate(timeout=5) == 0
    checkpoint = int(client.get(stack.keys.checkpoint) or 0)
    # Changes while the producer is down.
    set_status(stack, "order:FM-1001", "delivered")
    delete_order(stack, "1002")
    restarted = stack.producer()
    restarted.wait_log(f"reading the snapshot at ts={checkpoint - 1} for the per-key state")
    [update] = wait_change(
        stack, "order:FM-1001", lambda d: d and d["order_status"] == "delivered", "update"
    )
    [delete] = wait_change(stack, "order:FM-1002", lambda d: d is None, "delete")
    assert update.ts >= checkpoint and delete.ts >= checkpoint
    assert "receiving snapshot" not in restarted.log()
    state = applied_state(changes_of(stack))
    assert {k.decode() for k in state} == set(view_rows(stack))


def test_upsert_envelope(stack: Stack) -> None:
    producer = stack.producer(SUBSCRIBE_ENVELOPE="upsert")
    producer.wait_log(f"Snapshot complete for {VIEW}: 6 rows")
    set_status(stack, "order:FM-1003", "picking")
    delete_order(stack, "1005")
    wait_change(stack, "order:FM-1003", lambda d: d and d["order_status"] == "picking", "update")
    wait_change(stack, "order:FM-1005", lambda d: d is None, "delete")
    state = applied_state(changes_of(stack))
    assert {k.decode() for k in state} == set(view_rows(stack))
    assert next(iter(state[b"order:FM-1001"])) == "order_id"  # key columns first, as Materialize
    assert producer.terminate(timeout=5) == 0


def test_key_violation_goes_to_the_dead_letter_stream_and_nothing_else_stops(stack: Stack) -> None:
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 6 rows")
    # One transaction adds a second delivery task and changes the order: at its timestamp
    # the old row is retracted and two rows for FM-1001 are inserted.
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
            "('task:T-extra', 'task_of_order', 'order:FM-1001', 'entity_ref'), "
            "('task:T-extra', 'task_status', 'in_progress', 'string')"
        )
        pg.execute(
            "UPDATE triples SET object_value = 'picking', updated_at = now() "
            "WHERE subject_id = 'order:FM-1001' AND predicate = 'order_status'"
        )
    client = stack.sync_redis()
    letters = wait_for(lambda: client.xrange(stack.keys.dlq), 20, "a dead letter")
    letter = decode_dead_letter(letters[0][1])
    assert letter.key == b"order:FM-1001"
    assert letter.source == "producer"
    assert "2 live rows" in letter.reason
    rows = json.loads(letter.doc or b"[]")
    assert len(rows) == 2
    assert {r["delivery_task_status"] for r in rows} == {"pending", "in_progress"}
    producer.wait_log("Key violation in orders_search_source_mv")
    assert "[ERROR] Key violation" in producer.log()
    set_status(stack, "order:FM-1002", "picking")  # the stream goes on
    wait_change(stack, "order:FM-1002", lambda d: d and d["order_status"] == "picking", "update")


def test_refused_as_of_takes_a_snapshot_and_reconciles(stack: Stack) -> None:
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 6 rows")
    client = stack.sync_redis()
    wait_for(lambda: client.get(stack.keys.checkpoint), 10, "checkpoint")
    assert producer.terminate(timeout=5) == 0
    first_snapshot = {c.ts for c in changes_of(stack)}
    delete_order(stack, "1003")  # deleted while down …
    stack.emulator.admin("mzemu_tick()")
    stack.emulator.admin("mzemu_compact()")  # … and the history of it is gone
    restarted = stack.producer()
    restarted.wait_log(f"Snapshot complete for {VIEW}: 5 rows")
    log = restarted.log()
    assert "[WARNING] Materialize refused to resume" in log
    assert "could not find a valid timestamp" in log
    assert "RETAIN HISTORY" in log
    changes, markers = stream_changes(client, stack.keys)
    second = {c.ts for c in changes} - first_snapshot
    [snapshot_ts] = second
    assert {c.key for c in changes if c.ts == snapshot_ts} == {
        f"order:FM-{n}".encode() for n in (1001, 1002, 1004, 1005, 1006)
    }
    assert Marker(b"r", snapshot_ts) in markers
    assert client.hget(stack.keys.reconcile, str(snapshot_ts)) == b"pending"
    # The deleted order is not in the new snapshot; the reconcile deletes its old version.
    assert not any(c.key == b"order:FM-1003" and c.ts == snapshot_ts for c in changes)
    assert restarted.terminate(timeout=5) == 0


def test_bad_configuration_exits_2_naming_the_variable() -> None:
    result = run_producer_once({"STREAM_PARTITIONS": "0", "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert "STREAM_PARTITIONS" in result.stderr
    result = run_producer_once({"SUBSCRIBE_ENVELOPE": "debezium"})
    assert result.returncode == 2
    assert "SUBSCRIBE_ENVELOPE" in result.stderr
