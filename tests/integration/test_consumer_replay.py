"""consumer/replay.py against real Redis: finding a Materialize ts, moving the group back,
counting what consumers read meanwhile, keeping pending entries pending.

Uses the shared Redis under a test-only view name; keys are deleted afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from searchsync.common.entries import encode_changes, encode_progress
from searchsync.consumer.replay import (
    apply_plan,
    find_ts,
    parse_since,
    plan_partition,
    stream_info,
)
from tests.support.consumer import GROUP, Stack, stack_fixture

pytestmark = pytest.mark.timeout(60)

BASE = 1_796_000_000_000


stack = stack_fixture(partitions=1)


async def fill(stack: Stack) -> list[tuple[str, int]]:
    """Entries (id, ts): each ms holds three entries; ts = 10 × ms offset, the ts of an
    entry written a little after it (ids lag their ts). Every third is a progress entry."""
    stream = stack.keys.stream(0)
    await stack.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    out: list[tuple[str, int]] = []
    for ms in range(40):
        for seq in range(3):
            ts = BASE + ms * 10 + seq
            fields = encode_progress(ts) if seq == 2 else encode_changes(ts, [(b"k%d" % ms, b"{}")])
            entry_id = f"{BASE + 5000 + ms * 7}-{seq}"
            await stack.redis.xadd(stream, fields, id=entry_id)  # type: ignore[arg-type]
            out.append((entry_id, ts))
    return out


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 55, 200, 391, 392, 393])
async def test_find_ts_is_the_first_entry_with_ts_at_least_it(stack: Stack, offset: int) -> None:
    entries = await fill(stack)
    stream = stack.keys.stream(0)
    info = await stream_info(stack.redis, stream)
    assert info is not None
    ts = BASE + offset
    expected = next((entry_id for entry_id, t in entries if t >= ts), None)
    found = await find_ts(stack.redis, stream, ts, info)
    assert (f"{found[0]}-{found[1]}" if found else None) == expected


async def test_move_back_counts_changes_and_keeps_pending(stack: Stack) -> None:
    entries = await fill(stack)
    stream = stack.keys.stream(0)
    redis = stack.redis
    # a consumer read 60 entries and acknowledged all but the last 3
    read: Any = await redis.xreadgroup(GROUP, "c", {stream: ">"}, count=60)
    ids = [entry_id for entry_id, _ in read[0][1]]
    await redis.xack(stream, GROUP, *ids[:-3])
    since = parse_since(str(BASE + 100))  # ms 10 on: 20 of the 60 read, 3 of them pending
    plan = await plan_partition(redis, stack.keys, GROUP, 0, since)
    assert plan.first == (BASE + 5070, 0)
    assert plan.entries == 30
    assert plan.changes == 20  # progress entries hold none

    # the consumer reads on between the count and the move: those are counted too
    await redis.xreadgroup(GROUP, "c", {stream: ">"}, count=6)
    await apply_plan(redis, stack.keys, GROUP, plan)
    assert plan.late_entries == 6 and plan.entries == 36 and plan.changes == 24
    counts: Any = await redis.hgetall(stack.keys.counts(0))
    assert counts[b"written:p0"] == b"24"
    groups: Any = await redis.xinfo_groups(stream)
    assert groups[0]["last-delivered-id"] == f"{BASE + 5069}-18446744073709551615".encode()
    pending: Any = await redis.xpending(stream, GROUP)
    assert pending["pending"] == 3 + 6  # nothing pending was dropped
    again: Any = await redis.xreadgroup(GROUP, "c", {stream: ">"}, count=1)
    assert again[0][1][0][0] == entries[30][0].encode()


async def test_never_moves_forward(stack: Stack) -> None:
    await fill(stack)
    stream = stack.keys.stream(0)
    await stack.redis.xreadgroup(GROUP, "c", {stream: ">"}, count=3)
    plan = await plan_partition(stack.redis, stack.keys, GROUP, 0, parse_since(str(BASE + 200)))
    assert plan.first is None and plan.entries == 0  # not delivered yet: nothing to replay
