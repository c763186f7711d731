"""USE_SUBSCRIBE=false: the polling fallback, and switching modes back and forth.

Services: the devstack PostgreSQL (a private FreshMart schema), a private emulator
and a private redis-server; real ``python -m searchsync.producer.main`` processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

from psycopg import sql

from searchsync.common.config import load_settings
from searchsync.common.entries import Change, Marker
from searchsync.common.keys import Keys
from searchsync.common.redis_client import connect_redis
from searchsync.common.streams import ensure_groups
from searchsync.producer.adapters import MaterializePollSource, RedisDigestStore, open_poll_source
from searchsync.producer.backpressure import BufferMonitor
from searchsync.producer.polling import Poller
from searchsync.producer.subscribe import connect
from searchsync.producer.writer import StreamWriter
from tests.support.producer import (
    Stack,
    applied_state,
    delete_order,
    set_status,
    stack_fixture,
    stream_changes,
    view_rows,
    wait_for,
)

VIEW = Stack.VIEW


stack = stack_fixture(orders=6)


def index_after_reconciles(changes: list[Change], markers: list[Marker]) -> dict[bytes, Any]:
    """Applied state, then every reconcile: documents older than its ts are deleted."""
    state = applied_state(changes)
    for marker in markers:
        if marker.op == b"r":
            state = {k: d for k, d in state.items() if d["sync_version"] >= marker.ts}
    return state


def add_order(stack: Stack, number: str) -> None:
    """A new order FM-<number> of customer C-1 at store S-1, without lines or task."""
    order = f"order:FM-{number}"
    with stack.pg() as pg, pg.transaction(), pg.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, %s)",
            [
                (order, "order_number", f"FM-{number}", "string"),
                (order, "order_status", "placed", "string"),
                (order, "order_store", "store:S-1", "entity_ref"),
                (order, "placed_by", "customer:C-1", "entity_ref"),
            ],
        )


def wait_change(stack: Stack, key: str, predicate: Any, what: str) -> list[Change]:
    client = stack.sync_redis()

    def found() -> list[Change]:
        changes, _ = stream_changes(client, stack.keys)
        return [
            c
            for c in changes
            if c.key == key.encode() and predicate(None if c.doc is None else json.loads(c.doc))
        ]

    result: list[Change] = wait_for(found, 20, what)
    return result


def test_polling_upserts_changes_and_deletes_vanished_keys(stack: Stack) -> None:
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 6 rows upserted")
    client = stack.sync_redis()
    changes, markers = stream_changes(client, stack.keys)
    [full_ts] = {c.ts for c in changes}
    assert Marker(b"r", full_ts) in markers
    assert client.hget(stack.keys.reconcile, str(full_ts)) == b"pending"
    digests = client.hgetall(stack.keys.poll_digests)
    assert sorted(digests) == [f"order:FM-{n}".encode() for n in range(1001, 1007)]
    assert {len(value) for value in digests.values()} == {8}
    assert client.exists(stack.keys.poll_keys) == 0  # the old key set is gone

    set_status(stack, "order:FM-1001", "picking")
    [update] = wait_change(
        stack, "order:FM-1001", lambda d: d and d["order_status"] == "picking", "update"
    )
    delete_order(stack, "1002")
    [delete] = wait_change(stack, "order:FM-1002", lambda d: d is None, "delete")
    assert full_ts < update.ts <= delete.ts  # versions never go back
    # the checkpoint moves only after the entries are written: wait for it, don't race it
    wait_for(
        lambda: int(client.get(stack.keys.checkpoint) or 0) > delete.ts,
        10,
        "the checkpoint passing the delete",
    )
    assert client.hexists(stack.keys.poll_digests, "order:FM-1002") == 0
    assert client.hget(stack.keys.poll_digests, "order:FM-1001") != digests[b"order:FM-1001"]
    assert client.hget(stack.keys.poll_digests, "order:FM-1003") == digests[b"order:FM-1003"]
    changes, markers = stream_changes(client, stack.keys)
    assert {k.decode() for k in index_after_reconciles(changes, markers)} == set(view_rows(stack))
    assert poller.terminate(timeout=5) == 0


def test_a_restarted_poller_writes_only_what_changed_while_it_was_down(stack: Stack) -> None:
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 6 rows upserted")
    assert poller.terminate(timeout=5) == 0
    client = stack.sync_redis()
    written_before = len(stream_changes(client, stack.keys)[0])

    # while nothing runs; neither change moves effective_updated_at
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "UPDATE triples SET object_value = '4' "
            "WHERE subject_id = 'orderline:FM-1002-1' AND predicate = 'quantity'"
        )
        pg.execute("DELETE FROM triples WHERE subject_id = 'task:T-FM-1005'")
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    [total] = wait_change(
        stack, "order:FM-1002", lambda d: d and d["order_total_amount"] == 15, "new total"
    )
    [task] = wait_change(
        stack, "order:FM-1005", lambda d: d and d["delivery_task_status"] is None, "no task"
    )
    poller.wait_log("Broadcasting 2 changes")  # only those two, in one poll
    assert total.ts == task.ts
    assert poller.terminate(timeout=5) == 0
    assert "Full poll" not in poller.log()  # the digests were loaded from Redis
    assert len(stream_changes(client, stack.keys)[0]) == written_before + 2


def test_switching_modes_back_and_forth_loses_nothing(stack: Stack) -> None:
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 6 rows upserted")
    assert poller.terminate(timeout=5) == 0

    set_status(stack, "order:FM-1003", "picking")  # while nothing runs
    subscriber = stack.producer()
    subscriber.wait_log("for the per-key state")  # resumed after the poll's checkpoint
    wait_change(stack, "order:FM-1003", lambda d: d and d["order_status"] == "picking", "update")
    set_status(stack, "order:FM-1005", "delivered")  # while SUBSCRIBE runs
    wait_change(stack, "order:FM-1005", lambda d: d and d["order_status"] == "delivered", "update")
    add_order(stack, "1007")  # while SUBSCRIBE runs: never seen by a poll
    wait_change(stack, "order:FM-1007", lambda d: d is not None, "insert")
    assert subscriber.terminate(timeout=5) == 0
    client = stack.sync_redis()
    # SUBSCRIBE mode keeps neither: the next poll must not trust digests older than
    # what SUBSCRIBE wrote (FM-1007, deleted below, is in none of them)
    assert client.exists(stack.keys.poll_keys) == 0
    assert client.exists(stack.keys.poll_digests) == 0

    delete_order(stack, "1004")  # while nothing runs
    delete_order(stack, "1007")
    set_status(stack, "order:FM-1006", "cancelled")
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 5 rows upserted")
    wait_change(stack, "order:FM-1006", lambda d: d and d["order_status"] == "cancelled", "update")
    changes, markers = stream_changes(client, stack.keys)
    final = index_after_reconciles(changes, markers)
    view = view_rows(stack)
    assert {k.decode() for k in final} == set(view)
    for key, doc in final.items():
        assert doc["order_status"] == view[key.decode()]["order_status"]
    assert poller.terminate(timeout=5) == 0


def test_a_key_with_two_rows_is_dead_lettered_once_then_upserted_when_it_has_one(
    stack: Stack,
) -> None:
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 6 rows upserted")
    client = stack.sync_redis()
    before = [c for c in stream_changes(client, stack.keys)[0] if c.key == b"order:FM-1001"]

    with stack.pg() as pg, pg.transaction(), pg.cursor() as cursor:  # a second task: two rows
        cursor.executemany(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, %s)",
            [
                ("task:T-extra", "task_of_order", "order:FM-1001", "entity_ref"),
                ("task:T-extra", "task_status", "assigned", "string"),
            ],
        )
    poller.wait_log("Key violation in")
    time.sleep(1)  # several more polls: the unchanged violation is not sent again
    letters = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stack.keys.dlq))
    assert [fields[b"key"] for _, fields in letters] == [b"order:FM-1001"]
    assert b"key violation: 2 live rows" in letters[0][1][b"reason"]
    assert len(json.loads(letters[0][1][b"doc"])) == 2
    during = [c for c in stream_changes(client, stack.keys)[0] if c.key == b"order:FM-1001"]
    assert during == before  # nothing written for the key

    with stack.pg() as pg:
        pg.execute("DELETE FROM triples WHERE subject_id = 'task:T-extra'")

    def upserted_again() -> list[Change]:
        changes = stream_changes(client, stack.keys)[0]
        return [c for c in changes if c.key == b"order:FM-1001" and c.ts > before[-1].ts]

    [after] = wait_for(upserted_again, 20, "the upsert once one row is left")
    assert after.doc is not None
    assert json.loads(after.doc)["delivery_task_status"] == "pending"
    assert poller.terminate(timeout=5) == 0


async def test_a_poll_reads_the_view_before_it_asks_mz_now(stack: Stack) -> None:
    """Materialize fixes a read transaction's time domain with its first query (the
    objects it references and their schemas); ``SELECT mz_now()`` references none, so
    as the first query it would leave the view outside the domain. The emulator does
    not enforce time domains, so the statements the poll sends are recorded."""
    settings = load_settings(stack.env(USE_SUBSCRIBE="false"))
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings, client_name="poll-order-test")
    conn = await connect(settings)
    sent: list[str] = []
    execute = conn.execute

    async def recording(query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(query.as_string(conn) if isinstance(query, sql.Composable) else str(query))
        return await execute(query, *args, **kwargs)

    conn.execute = recording  # type: ignore[method-assign]
    try:
        await ensure_groups(redis, keys, settings.consumer_group)
        writer = StreamWriter(redis, keys, progress_interval_ms=settings.progress_interval_ms)
        monitor = BufferMonitor(
            redis,
            keys,
            group=settings.consumer_group,
            threshold=settings.backpressure_threshold,
            resume=settings.backpressure_resume,
            log_seconds=settings.buffer_log_seconds,
        )
        poller = Poller(
            settings,
            writer,
            monitor,
            asyncio.Event(),
            open_source=open_poll_source,
            digests=RedisDigestStore(redis, keys),
        )
        plan = await poller.poll_once(MaterializePollSource(conn, settings))
    finally:
        await conn.close()
        await redis.aclose()
    assert sent[:2] == [f'SELECT 1 FROM "{VIEW}" LIMIT 1', "SELECT mz_now()::text"]
    assert len(plan.upserts) == 6  # and the poll itself read the whole view
