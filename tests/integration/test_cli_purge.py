"""``searchsync purge-key`` against the devstack's Redis: exactly the key's acknowledged
entries and its letters go; pending, undelivered and other keys' data stay.

Services: the shared Redis under a test-only view name (tests.support.consumer's
stack, keys deleted afterwards); the ``searchsync`` CLI as a real process. No
producer or consumer runs: entries are written with explicit ids and the consumer
group is moved by hand (XREADGROUP, XACK, XGROUP SETID), as consumers would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import pytest

from searchsync.common.entries import (
    DeadLetter,
    encode_changes,
    encode_dead_letter,
    encode_progress,
    raw_fields_json,
)
from searchsync.common.partition import partition_of
from tests.support.consumer import GROUP, Stack, stack_fixture
from tests.support.pipeline import CLI

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 2
KEY = "customer:purge-1"
PARTITION = partition_of(KEY.encode(), PARTITIONS)
# two other keys of the same partition, and one of the other partition
_SAME = [k for n in range(100) if partition_of((k := f"order:FM-{n}").encode(), 2) == PARTITION]
OTHER1, OTHER2 = (k.encode() for k in _SAME[:2])
ELSEWHERE = next(
    k for n in range(100) if partition_of((k := f"order:FM-{n}").encode(), 2) != PARTITION
).encode()
MINE = KEY.encode()
DOC = b'{"email":"someone@example.com"}'

stack = stack_fixture(partitions=PARTITIONS)


def cli(stack: Stack, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    """``searchsync purge-key *args``, answering the prompt with ``answer`` (else none)."""
    return searchsync(stack, "purge-key", *args, answer=answer)


def searchsync(
    stack: Stack, *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        env={**os.environ, **stack.consumer_env()},
        input=answer if answer is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ids(rows: Any) -> list[str]:
    return [(i.decode() if isinstance(i, bytes) else i) for i, _ in rows]


def letter(key: bytes, doc: bytes | None = DOC) -> dict[bytes, bytes]:
    dead = DeadLetter(ts=1, op=b"u", key=key, reason="test", source="p0/1-0", doc=doc)
    return encode_dead_letter(dead)


async def fill(stack: Stack) -> str:
    """The key's partition stream, ids 1-0 … 8-0, and the group at:
    delivered 1-0 … 7-0, acknowledged all but 5-0 (pending), 8-0 undelivered."""
    redis = stack.redis
    stream = stack.keys.stream(PARTITION)
    entries = [
        encode_changes(10, [(MINE, DOC)]),  # 1-0 acknowledged: goes
        encode_changes(11, [(MINE, DOC), (OTHER1, DOC), (OTHER2, None)]),  # 2-0 goes, +2
        encode_changes(12, [(OTHER1, DOC)]),  # 3-0 another key: stays
        encode_progress(13),  # 4-0 stays
        encode_changes(14, [(MINE, None)]),  # 5-0 pending: kept
        encode_changes(15, [(OTHER2, DOC)]),  # 6-0 another key: stays
        encode_changes(16, [(MINE, None), (OTHER1, DOC)]),  # 7-0 acked above a pending: kept
        encode_changes(17, [(MINE, DOC)]),  # 8-0 undelivered: kept
    ]
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for n, fields in enumerate(entries, start=1):
        await redis.xadd(stream, fields, id=f"{n}-0")  # type: ignore[arg-type]
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=7)
    await redis.xack(stream, GROUP, "1-0", "2-0", "3-0", "4-0", "6-0", "7-0")
    # the other partition: an entry naming the key there (it never could) is not looked at
    other = stack.keys.stream(1 - PARTITION)
    await redis.xadd(other, encode_changes(10, [(ELSEWHERE, DOC)]), id="1-0")  # type: ignore[arg-type]
    await redis.xadd(other, {b"ts": b"10", b"op": b"u", b"key": MINE, b"doc": DOC}, id="2-0")
    # letters: two of the key, one of another key, one whole unreadable batch holding it
    dlq = stack.keys.dlq
    await redis.xadd(dlq, letter(MINE), id="1-0")  # type: ignore[arg-type]
    await redis.xadd(dlq, letter(OTHER1), id="2-0")  # type: ignore[arg-type]
    await redis.xadd(dlq, letter(MINE, None), id="3-0")  # type: ignore[arg-type]
    batch = {b"op": b"b", b"n": b"2", b"u:" + MINE: DOC, b"d:" + OTHER2: b""}
    whole = DeadLetter(
        ts=0, op=b"b", key=b"", reason="no ts", source="p0/9-0", doc=raw_fields_json(batch)
    )
    await redis.xadd(dlq, encode_dead_letter(whole), id="4-0")  # type: ignore[arg-type]
    return stream


async def test_only_acknowledged_entries_go_and_a_second_run_takes_the_rest(
    stack: Stack,
) -> None:
    redis = stack.redis
    stream = await fill(stack)

    first = cli(stack, KEY, "--yes", "--json")
    assert first.returncode == 1, (first.stdout, first.stderr)  # something was kept
    report = json.loads(first.stdout)
    outcomes = {row["id"]: row["outcome"] for row in report["entries"]}
    assert outcomes == {
        "1-0": "deleted",
        "2-0": "deleted",
        "5-0": "kept",
        "7-0": "kept",
        "8-0": "kept",
    }
    assert report["deleted_entries"] == 2 and report["deleted_other_changes"] == 2
    assert report["kept_entries"] == 3 and report["deleted_letters"] == 3
    assert report["partition"] == PARTITION and report["stream"] == stream

    assert ids(await redis.xrange(stream)) == ["3-0", "4-0", "5-0", "6-0", "7-0", "8-0"]
    assert ids(await redis.xrange(stack.keys.dlq)) == ["2-0"]  # the other key's letter
    assert ids(await redis.xrange(stack.keys.stream(1 - PARTITION))) == ["1-0", "2-0"]
    # the group is as it was: 5-0 still pending, still positioned at 7-0, lag computable
    summary: Any = await redis.xpending(stream, GROUP)
    assert summary["pending"] == 1 and summary["min"] in (b"5-0", "5-0")
    (info,) = await redis.xinfo_groups(stream)
    assert info["last-delivered-id"] in (b"7-0", "7-0") and info["lag"] == 1

    # the consumers catch up: 5-0 acknowledged, 8-0 delivered and acknowledged
    await redis.xack(stream, GROUP, "5-0")
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, GROUP, "8-0")
    second = cli(stack, KEY, "--yes")
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert "deleted 3 entries (with 1 change of other keys) and 0 letters" in second.stdout
    assert ids(await redis.xrange(stream)) == ["3-0", "4-0", "6-0"]

    third = cli(stack, KEY, "--yes")
    assert third.returncode == 0, (third.stdout, third.stderr)
    assert third.stdout.startswith(f"no entries of key '{KEY}' in {stream}, no letters")

    # a replay from before a deleted entry would skip it: refused, naming resync (below
    # the first entry left Redis says "removed by retention", above it "by hand")
    for since, why in (("1-0", "removed by retention"), ("4-0", "deleted by hand (XDEL)")):
        replay = searchsync(stack, "replay", "--since", since, "--partition", str(PARTITION))
        # (no --yes: a refusal comes before any question)
        assert replay.returncode == 1, (replay.stdout, replay.stderr)
        assert why in replay.stderr and "searchsync resync" in replay.stderr


async def test_the_plan_is_shown_and_nothing_goes_unless_confirmed(stack: Stack) -> None:
    redis = stack.redis
    stream = await fill(stack)

    refused = cli(stack, KEY, answer="n\n")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert (
        f"will delete the data of key '{KEY}' (partition p{PARTITION}): 2 acknowledged "
        f"entries of {stream} and 3 dead letters of {stack.keys.dlq}." in refused.stdout
    )
    assert "entry 2-0 (batch at ts 11) also holds 2 changes of other keys" in refused.stdout
    assert "3 entries of the key are not acknowledged yet" in refused.stdout
    assert "not confirmed: nothing was deleted" in refused.stderr
    assert len(ids(await redis.xrange(stream))) == 8
    assert await redis.xlen(stack.keys.dlq) == 4

    # --json without --yes: the prompt goes to stderr, stdout is the one JSON object
    accepted = cli(stack, KEY, "--json", answer="y\n")
    assert accepted.returncode == 1, (accepted.stdout, accepted.stderr)
    assert "Proceed? [y/N]" in accepted.stderr
    assert json.loads(accepted.stdout)["confirmed"] is True
    assert ids(await redis.xrange(stream)) == ["3-0", "4-0", "5-0", "6-0", "7-0", "8-0"]


async def test_without_a_group_nothing_of_the_stream_goes(stack: Stack) -> None:
    """No consumer ever read the partition: every entry is on its way; letters go."""
    redis = stack.redis
    stream = stack.keys.stream(PARTITION)
    await redis.xadd(stream, encode_changes(10, [(MINE, DOC)]), id="1-0")  # type: ignore[arg-type]
    await redis.xadd(stack.keys.dlq, letter(MINE), id="1-0")  # type: ignore[arg-type]
    result = cli(stack, KEY, "--yes", "--json")
    assert result.returncode == 1, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert [r["outcome"] for r in report["entries"]] == ["kept"]
    assert ids(await redis.xrange(stream)) == ["1-0"]
    assert await redis.xlen(stack.keys.dlq) == 0


async def test_a_group_moved_by_a_replay_keeps_what_it_will_re_deliver(stack: Stack) -> None:
    """``searchsync replay`` sets the group to ``<ms>-18446744073709551615`` (the id before
    ``<ms+1>-0``): the deletion script compares such ids exactly."""
    redis = stack.redis
    stream = stack.keys.stream(PARTITION)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for entry_id in ("1000-0", "1000-5", "1001-0", "10000-0"):
        await redis.xadd(stream, encode_changes(10, [(MINE, DOC)]), id=entry_id)  # type: ignore[arg-type]
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, GROUP, "1000-0", "1000-5", "1001-0", "10000-0")
    await redis.xgroup_setid(stream, GROUP, id="1000-18446744073709551615")
    result = cli(stack, KEY, "--yes")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert ids(await redis.xrange(stream)) == ["1001-0", "10000-0"]


async def purge_while_the_group_moves(stack: Stack, *, reread: int) -> dict[str, Any]:
    """Plan with every entry acknowledged; while the command waits for its answer, a
    replay moves the group back to just before 10-0 and consumers re-read ``reread``
    entries (pending now); then confirm. Returns the command's JSON report."""
    redis = stack.redis
    stream = stack.keys.stream(PARTITION)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for entry_id in ("9-0", "9-5", "10-0", "100-0"):
        await redis.xadd(stream, encode_changes(10, [(MINE, DOC)]), id=entry_id)  # type: ignore[arg-type]
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=10)
    await redis.xack(stream, GROUP, "9-0", "9-5", "10-0", "100-0")
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "purge-key", KEY, "--json",
        env={**os.environ, **stack.consumer_env()},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        prompt = await asyncio.wait_for(proc.stderr.readuntil(b"Proceed? [y/N] "), 60)
        assert b"4 acknowledged entries" in prompt
        # what searchsync replay --since 10-0 does: SETID to the id just before 10-0
        await redis.xgroup_setid(stream, GROUP, id="9-18446744073709551615")
        if reread:
            await redis.xreadgroup(GROUP, "c2", {stream: ">"}, count=reread)
        proc.stdin.write(b"y\n")
        await proc.stdin.drain()
        proc.stdin.close()
        out = await asyncio.wait_for(proc.stdout.read(), 60)
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 1, out
    report: dict[str, Any] = json.loads(out)
    assert ids(await redis.xrange(stream)) == ["10-0", "100-0"]
    return report


async def test_entries_a_replay_moved_back_meanwhile_are_kept(stack: Stack) -> None:
    """The deletion checks again, in Redis, at deletion time: 10-0 and 100-0 are not
    delivered any more (ids of different lengths: 9-… < 10-0 < 100-0)."""
    report = await purge_while_the_group_moves(stack, reread=0)
    outcomes = {row["id"]: row["outcome"] for row in report["entries"]}
    assert outcomes == {"9-0": "deleted", "9-5": "deleted", "10-0": "kept", "100-0": "kept"}


async def test_entries_pending_again_meanwhile_are_kept(stack: Stack) -> None:
    """After the replay a consumer reads 10-0 again: pending, so it and what follows stay."""
    report = await purge_while_the_group_moves(stack, reread=1)
    assert [r["outcome"] for r in report["entries"]] == ["deleted", "deleted", "kept", "kept"]
    summary: Any = await stack.redis.xpending(stack.keys.stream(PARTITION), GROUP)
    assert summary["pending"] == 1


async def test_bad_arguments_exit_2(stack: Stack) -> None:
    empty = cli(stack, "", "--yes")
    assert empty.returncode == 2 and "KEY is empty" in empty.stderr
    await stack.redis.hset(
        stack.keys.meta,
        mapping={"layout": "2", "partitions": "3", "view": stack.view, "key_column": "order_id"},
    )
    await stack.redis.xadd(stack.keys.dlq, letter(MINE), id="1-0")  # type: ignore[arg-type]
    layout = cli(stack, KEY, "--yes")
    assert layout.returncode == 2, (layout.stdout, layout.stderr)
    assert "STREAM_PARTITIONS=2" in layout.stderr and "STREAM_PARTITIONS=3" in layout.stderr
    assert await stack.redis.xlen(stack.keys.dlq) == 1
