"""Helpers for the producer's integration and fault tests (not a test module).

Services: the shared Redis and PostgreSQL recorded in .devstack/env (or the
environment), a private redis-server when a test must restart Redis, and real
``python -m searchsync.producer.main`` processes. Everything a test creates is named after a
random view name and removed afterwards. The processes and the private stack are in
devstack.harness.producer (shared with bench/) and re-exported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest
import redis
from redis.asyncio import Redis

from devstack.env import devstack_env
from devstack.harness.producer import PYTHON, REPO, ProducerProcess, Stack, seed_schema, start_load
from devstack.harness.services import PrivateRedis, free_port, wait_for
from searchsync.common.entries import Change, Marker, decode_entry
from searchsync.common.keys import Keys

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition

__all__ = [
    "PYTHON",
    "REPO",
    "Entries",
    "PrivateRedis",
    "ProducerProcess",
    "Stack",
    "all_changes",
    "applied_state",
    "delete_order",
    "delete_view_keys",
    "devstack_env",
    "free_port",
    "run_producer_once",
    "seed_schema",
    "set_status",
    "stack_fixture",
    "start_load",
    "stream_changes",
    "unique_view",
    "view_rows",
    "wait_for",
    "xrange_all",
    "xread_new",
]


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def split_entries(entries: Entries) -> tuple[list[Change], list[Marker]]:
    """Decode stream entries (in order) into their changes and their markers."""
    changes: list[Change] = []
    markers: list[Marker] = []
    for _, fields in entries:
        decoded = decode_entry(fields)
        if isinstance(decoded, list):
            changes.extend(decoded)
        else:
            markers.append(decoded)
    return changes, markers


def xrange_all(client: redis.Redis, stream: str) -> Entries:
    """XRANGE of a whole stream, typed (redis-py's own annotation is too wide)."""
    return cast(Entries, client.xrange(stream))


def xread_new(client: redis.Redis, group: str, consumer: str, stream: str) -> Entries:
    """XREADGROUP ``>`` of one stream, typed."""
    reply = cast(
        list[tuple[bytes, Entries]],
        client.xreadgroup(group, consumer, {stream: ">"}, count=100_000),
    )
    return [entry for _, batch in reply or [] for entry in batch]


def unique_view() -> str:
    """A view name no other test uses: keys are searchsync:{<view>…"""
    return f"test_prod_{uuid.uuid4().hex[:10]}"


async def delete_view_keys(client: Redis, view: str) -> None:
    """Delete every key of ``view`` (never anything else: the Redis is shared)."""
    async for key in client.scan_iter(match=Keys(view, 1).pattern, count=1000):
        await client.delete(key)


async def all_changes(client: Redis, keys: Keys) -> tuple[list[Change], list[Marker]]:
    """Every change and marker in every partition stream, partition by partition."""
    return split_entries(
        [entry for stream in keys.streams() for entry in cast(Entries, await client.xrange(stream))]
    )


def stack_fixture(
    *,
    orders: int = 5,
    partitions: int = 4,
    emulator_env: Mapping[str, str] | None = None,
    scope: Literal["function", "module"] = "function",
) -> FixtureFunctionDefinition:
    """A test module's :class:`Stack` fixture (``orders`` seeded orders, ``partitions``
    streams, the emulator started with ``emulator_env``), named after the variable it
    is assigned to, closed afterwards::

        stack = stack_fixture(orders=6)
    """

    def built() -> Iterator[Stack]:
        stack = Stack(orders=orders, partitions=partitions, emulator_env=emulator_env)
        try:
            yield stack
        finally:
            stack.close()

    return pytest.fixture(built, scope=scope)


def run_producer_once(
    env: Mapping[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the producer to completion (e.g. a configuration error) and capture its output."""
    return subprocess.run(
        [str(PYTHON), "-m", "searchsync.producer.main"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stream_changes(client: redis.Redis, keys: Keys) -> tuple[list[Change], list[Marker]]:
    """Every change and marker in the partition streams (sync client)."""
    return split_entries(
        [entry for stream in keys.streams() for entry in xrange_all(client, stream)]
    )


def applied_state(changes: list[Change]) -> dict[bytes, dict[str, Any]]:
    """What an index would hold after applying ``changes`` with external versions."""
    state: dict[bytes, tuple[int, dict[str, Any] | None]] = {}
    for change in changes:
        current = state.get(change.key)
        if current is not None and current[0] > change.ts:
            continue
        state[change.key] = (change.ts, None if change.doc is None else json.loads(change.doc))
    return {key: doc for key, (_, doc) in state.items() if doc is not None}


def view_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    """The view as PostgreSQL computes it now: order_id → row as a dict."""
    with stack.pg() as pg:
        cursor = pg.execute(f"SELECT * FROM {Stack.VIEW}")
        names = [column.name for column in cursor.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def set_status(stack: Stack, order: str, status: str) -> None:
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "UPDATE triples SET object_value = %s, updated_at = now() "
            "WHERE subject_id = %s AND predicate = 'order_status'",
            (status, order),
        )


def delete_order(stack: Stack, number: str) -> None:
    """Delete every triple of order ``FM-<number>`` (order, lines, task)."""
    order = f"order:FM-{number}"
    with stack.pg() as pg, pg.transaction():
        pg.execute(
            "DELETE FROM triples WHERE subject_id = %s OR subject_id IN "
            "(SELECT subject_id FROM triples WHERE object_value = %s "
            "AND predicate IN ('line_of_order', 'task_of_order'))",
            (order, order),
        )
