"""A change below a partition's reconcile marker is superseded by the snapshot (real services).

After history was lost the producer writes a snapshot at T and a reconcile marker
``r``@T in every partition; once every partition applied through T the reconcile
deletes the documents below T. A producer paused past its lease (a zombie) may
write its batch after all that: an upsert at ts < T of a key deleted in the lost
history. No tombstone refuses it (the key was never indexed, or deleted long ago),
so before the floor it was indexed and stayed (``python -m tests.sim --seed 334
--polling``). The consumer now settles a change below the highest reconcile marker
its partition has settled without sending it: acknowledged, not indexed, no dead
letter. The floor is kept in ``searchsync:{<view>:p<N>}:floor``, so a consumer that
takes the partition over after the marker was acknowledged knows it too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from searchsync.common.keys import RECONCILE_DONE
from tests.support.consumer import Stack, running_worker, stack_fixture, wait_for

pytestmark = pytest.mark.timeout(60)

stack = stack_fixture(partitions=1)


def order(key: str, status: str) -> dict[str, Any]:
    return {"order_id": key, "order_status": status}


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def reconciled(stack: Stack, ts: int) -> bool:
    return await stack.redis.hget(stack.keys.reconcile, str(ts)) == RECONCILE_DONE


async def snapshot_and_reconcile(stack: Stack, t: int) -> None:
    """The successor's snapshot at ``t`` (one live row), its marker, a progress entry past
    it; waits (with a consumer running) until the reconcile at ``t`` is done."""
    await stack.write(t, [("order:live", order("order:live", "PLACED"))])
    await stack.reconcile_marker(t)
    await stack.progress(t + 1)
    await wait_for(lambda: settled(stack), 20, "the snapshot acknowledged")
    await wait_for(lambda: reconciled(stack, t), 20, "the reconcile at T done")


async def zombie_write(stack: Stack, ts: int, key: str) -> None:
    """The paused producer's batch, written after the marker: an upsert below T."""
    await stack.write(ts, [(key, order(key, "ZOMBIE"))])


async def assert_superseded(stack: Stack, key: str) -> None:
    docs = await stack.documents()
    assert key not in docs, f"{key} written below the snapshot was indexed: {docs[key]}"
    assert "order:live" in docs
    assert await stack.pending() == 0
    assert await stack.dead_letters() == []
    written, acked = await stack.counts()
    assert written == acked


async def test_a_stale_upsert_after_the_reconcile_marker_is_acknowledged_not_indexed(
    stack: Stack,
) -> None:
    t = int(time.time() * 1000) - 60_000
    async with running_worker(stack.settings()):
        await snapshot_and_reconcile(stack, t)
        await zombie_write(stack, t - 2000, "order:gone")
        await wait_for(lambda: settled(stack), 20, "the stale entry acknowledged")
    await assert_superseded(stack, "order:gone")


async def test_the_floor_survives_a_takeover(stack: Stack) -> None:
    """The marker settled by one consumer, the stale entry read by the next one."""
    t = int(time.time() * 1000) - 60_000
    async with running_worker(stack.settings()):
        await snapshot_and_reconcile(stack, t)
    # the partition's next owner never sees the marker: the floor comes from Redis
    await zombie_write(stack, t - 2000, "order:gone")
    async with running_worker(stack.settings(CONSUMER_NAME="next-owner")):
        await wait_for(lambda: settled(stack), 20, "the stale entry acknowledged")
    await assert_superseded(stack, "order:gone")
