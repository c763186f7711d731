"""consumer/reader.py against the devstack's real Redis: takeovers carry the consumers'
own attempts (consumer/attempts.py), never Redis' delivery counts, and finding
entries left pending by a consumer that no longer works on them.

Only Redis is used (the stack's OpenSearch client is never called); each test has
its own view name, so its own stream keys, deleted afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from searchsync.consumer.acks import Acker
from searchsync.consumer.reader import claim_ids, claim_pending, pending_below, pending_count
from tests.support.consumer import GROUP, Stack, stack_fixture

pytestmark = pytest.mark.timeout(60)


stack = stack_fixture(partitions=1, groups=True)


async def add(stack: Stack, count: int) -> list[bytes]:
    ids: list[bytes] = []
    for n in range(count):
        entry_id: Any = await stack.redis.xadd(
            stack.keys.stream(0), {b"op": b"p", b"ts": str(n).encode()}
        )
        ids.append(entry_id)
    return ids


async def deliver(stack: Stack, consumer: str, count: int) -> None:
    await stack.redis.xreadgroup(GROUP, consumer, {stack.keys.stream(0): ">"}, count=count)


async def counts(stack: Stack) -> dict[bytes, tuple[str, int]]:
    rows: Any = await stack.redis.xpending_range(stack.keys.stream(0), GROUP, "-", "+", 100)
    return {
        row["message_id"]: (row["consumer"].decode(), int(row["times_delivered"])) for row in rows
    }


async def test_takeovers_carry_attempts_not_redis_deliveries(stack: Stack) -> None:
    ids = await add(stack, 5)
    await deliver(stack, "old", 5)
    stream, attempts = stack.keys.stream(0), stack.keys.attempts(0)
    # two of them were sent and never came back (consumer.attempts)
    await stack.redis.hset(attempts, mapping={ids[1]: 2, ids[3]: 1})
    for _ in range(3):  # rebalances and restarts: Redis counts every one of them
        cursor, claimed = await claim_pending(
            stack.redis, stream, GROUP, "me", 10, attempts=attempts
        )
        assert cursor == b"0-0"
    assert [(entry.id, entry.attempts) for entry in claimed] == [
        (ids[0], 0), (ids[1], 2), (ids[2], 0), (ids[3], 1), (ids[4], 0)
    ]  # fmt: skip
    assert await counts(stack) == dict.fromkeys(ids, ("me", 4))


async def test_entries_trimmed_while_pending_are_dropped_by_a_takeover(stack: Stack) -> None:
    ids = await add(stack, 3)
    await deliver(stack, "me", 3)
    stream = stack.keys.stream(0)
    await stack.redis.xdel(stream, ids[1])
    _, claimed = await claim_pending(
        stack.redis, stream, GROUP, "me", 10, attempts=stack.keys.attempts(0)
    )
    assert [entry.id for entry in claimed] == [ids[0], ids[2]]
    assert set(await counts(stack)) == {ids[0], ids[2]}


async def test_pending_below_sees_every_consumer_and_excludes_its_bound(stack: Stack) -> None:
    ids = await add(stack, 5)
    await deliver(stack, "old", 2)
    await deliver(stack, "me", 3)
    stream = stack.keys.stream(0)
    assert await pending_count(stack.redis, stream, GROUP) == 5
    assert await pending_below(stack.redis, stream, GROUP, ids[3], 10) == ids[:3]
    assert await pending_below(stack.redis, stream, GROUP, ids[3], 2) == ids[:2]
    assert await pending_below(stack.redis, stream, GROUP, ids[0], 10) == []


async def test_claim_ids_takes_entries_over_with_their_attempts(stack: Stack) -> None:
    ids = await add(stack, 4)
    await deliver(stack, "old", 4)
    stream, attempts = stack.keys.stream(0), stack.keys.attempts(0)
    await stack.redis.hset(attempts, ids[2], 3)
    await stack.redis.xdel(stream, ids[1])  # trimmed while pending
    claimed = await claim_ids(stack.redis, stream, GROUP, "me", ids[:3], attempts=attempts)
    assert [(entry.id, entry.attempts) for entry in claimed] == [(ids[0], 0), (ids[2], 3)]
    assert all(entry.fields[b"op"] == b"p" for entry in claimed)
    # the trimmed one left the pending list; the one not asked for stayed where it was
    assert await counts(stack) == {
        ids[0]: ("me", 2),
        ids[2]: ("me", 2),
        ids[3]: ("old", 1),
    }
    assert await claim_ids(stack.redis, stream, GROUP, "me", [], attempts=attempts) == []


async def test_settle_reports_what_is_still_pending_below_a_progress_entry(stack: Stack) -> None:
    ids = await add(stack, 5)
    await deliver(stack, "old", 1)  # a stray: read by a consumer that will not settle it
    await deliver(stack, "me", 4)
    acker = Acker(stack.redis, stack.keys, GROUP)
    stray = await acker.settle(0, ids[1:], 0, check_below=ids[4], check_count=10)
    assert stray == [ids[0]]
    assert await acker.settle(0, [], 0) == []  # nothing asked, nothing sent
    # once it is settled too, the check comes back empty
    assert await acker.settle(0, [ids[0]], 0, check_below=ids[4], check_count=10) == []
    await acker.advance(0, 70)
    await acker.advance(0, 50)  # an older frontier never lowers it
    assert await stack.redis.get(stack.keys.applied(0)) == b"70"
