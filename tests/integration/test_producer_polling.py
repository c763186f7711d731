"""USE_SUBSCRIBE=false: the polling fallback, and switching modes back and forth.

Services: the devstack PostgreSQL (a private FreshMart schema), a private emulator
and a private redis-server; real ``python -m producer.main`` processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.entries import Change, Marker
from tests.support.producer import (
    Stack,
    applied_state,
    delete_order,
    set_status,
    stream_changes,
    view_rows,
    wait_for,
)

VIEW = Stack.VIEW


@pytest.fixture
def stack() -> Iterator[Stack]:
    built = Stack(orders=6)
    try:
        yield built
    finally:
        built.close()


def index_after_reconciles(changes: list[Change], markers: list[Marker]) -> dict[bytes, Any]:
    """Applied state, then every reconcile: documents older than its ts are deleted."""
    state = applied_state(changes)
    for marker in markers:
        if marker.op == b"r":
            state = {k: d for k, d in state.items() if d["sync_version"] >= marker.ts}
    return state


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
    assert client.scard(stack.keys.poll_keys) == 6

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
    assert client.sismember(stack.keys.poll_keys, "order:FM-1002") == 0
    changes, markers = stream_changes(client, stack.keys)
    assert {k.decode() for k in index_after_reconciles(changes, markers)} == set(view_rows(stack))
    assert poller.terminate(timeout=5) == 0


def test_switching_modes_back_and_forth_loses_nothing(stack: Stack) -> None:
    poller = stack.producer(USE_SUBSCRIBE="false", POLL_INTERVAL="0.2")
    poller.wait_log(f"Full poll of {VIEW}: 6 rows upserted")
    assert poller.terminate(timeout=5) == 0

    set_status(stack, "order:FM-1003", "picking")  # while nothing runs
    subscriber = stack.producer()
    subscriber.wait_log("(no snapshot)")  # resumed after the poll's checkpoint
    wait_change(stack, "order:FM-1003", lambda d: d and d["order_status"] == "picking", "update")
    set_status(stack, "order:FM-1005", "delivered")  # while SUBSCRIBE runs
    wait_change(stack, "order:FM-1005", lambda d: d and d["order_status"] == "delivered", "update")
    assert subscriber.terminate(timeout=5) == 0
    client = stack.sync_redis()
    assert client.exists(stack.keys.poll_keys) == 0  # SUBSCRIBE mode does not keep it

    delete_order(stack, "1004")  # while nothing runs
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
