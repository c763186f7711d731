"""The simulator's models (tests/sim) against the real Redis and OpenSearch of the devstack.

Every check runs twice: on the in-memory models through the simulator's adapters
(tests.sim.services) and on the devstack through the production adapters
(consumer.adapters.RedisStreamStore, consumer.leases.Leases, consumer.sender.BulkSender).
When Redis or OpenSearch behave differently from the model, the same check fails
on one side only, so the simulator cannot drift from the services it stands in for.
Each real run has its own view name and index alias, deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from searchsync.common.config import Settings
from searchsync.common.entries import Change, DeadLetter, encode_progress
from searchsync.common.index import ensure_index
from searchsync.common.keys import Keys
from searchsync.common.streams import ensure_groups
from searchsync.consumer.adapters import RedisStreamStore
from searchsync.consumer.highwater import HIGH_WATER_MEMBER
from searchsync.consumer.leases import Leases, hold_seconds
from searchsync.consumer.outcomes import Outcome, classify
from searchsync.consumer.ports import IndexSink, LeaseStore, StreamStore
from searchsync.consumer.sender import BulkSender
from tests.sim.index import POISON_DOC
from tests.sim.loop import VirtualLoop
from tests.sim.services import SimLeases, SimProcess, SimSink, SimStreamStore
from tests.sim.world import World
from tests.support.consumer import GROUP, Stack, stack_of

pytestmark = pytest.mark.timeout(60)

TTL = 0.5  # LEASE_TTL_SECONDS of both sides: a lease lives hold_seconds(TTL) = 0.4 s


class Backend:
    """What a check needs besides the ports: a way to write, look, and let time pass."""

    keys: Keys
    sink: IndexSink

    def store(self, me: str) -> StreamStore:
        raise NotImplementedError

    def leases(self, me: str) -> LeaseStore:
        raise NotImplementedError

    async def xadd(self, fields: dict[bytes, bytes]) -> bytes:
        raise NotImplementedError

    async def trim_below(self, entry_id: bytes) -> None:
        raise NotImplementedError

    async def owners(self) -> dict[bytes, str]:
        raise NotImplementedError

    async def dlq_sources(self) -> list[str]:
        raise NotImplementedError

    async def applied(self) -> int | None:
        raise NotImplementedError

    async def raise_high_water(self, ts: int) -> None:
        raise NotImplementedError

    async def elapse(self, seconds: float) -> None:
        raise NotImplementedError

    async def version(self, key: bytes) -> int | None:
        """The version of ``key``'s live document (None: none)."""
        raise NotImplementedError


class ModelBackend(Backend):
    def __init__(self) -> None:
        self.loop = VirtualLoop()  # only its clock: moved by elapse()
        settings = Settings(lease_ttl_seconds=TTL, stream_partitions=1)
        self.world = World(0, self.loop, settings, partitions=1)
        self.world.checker.enabled = False  # the checks here break invariants on purpose
        self.keys = self.world.keys
        self.sink = SimSink(self.world, SimProcess(self.world, "sink"))
        self.redis = self.world.redis

    def store(self, me: str) -> StreamStore:
        return SimStreamStore(self.world, SimProcess(self.world, me))

    def leases(self, me: str) -> LeaseStore:
        return SimLeases(self.world, SimProcess(self.world, me))

    async def xadd(self, fields: dict[bytes, bytes]) -> bytes:
        self.loop.now += 0.001
        return self.redis.xadd(self.keys.stream(0), fields)

    async def trim_below(self, entry_id: bytes) -> None:
        self.redis.xtrim_minid(self.keys.stream(0), entry_id)

    async def owners(self) -> dict[bytes, str]:
        pending = self.redis.stream(self.keys.stream(0)).group.pending
        return {f"{i[0]}-{i[1]}".encode(): p.consumer for i, p in sorted(pending.items())}

    async def dlq_sources(self) -> list[str]:
        return [f[b"source"].decode() for _, f in self.redis.xrange(self.keys.dlq)]

    async def applied(self) -> int | None:
        raw = self.redis.hash(self.keys.applied).get(b"p0")
        return int(raw) if raw is not None else None

    async def raise_high_water(self, ts: int) -> None:
        self.redis.zset(self.keys.high_water)[HIGH_WATER_MEMBER.decode()] = ts

    async def elapse(self, seconds: float) -> None:
        self.loop.now += seconds

    async def version(self, key: bytes) -> int | None:
        doc = self.world.index.current(key)
        return doc.version if doc is not None and doc.source is not None else None


class RealBackend(Backend):
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.keys = stack.keys
        self.redis = stack.redis
        self.sink = BulkSender(stack.search, stack.alias, 10.0)

    def leases(self, me: str) -> Leases:
        return Leases(self.redis, self.keys, me, TTL)

    def store(self, me: str) -> StreamStore:
        return RedisStreamStore(self.redis, self.keys, GROUP, me, self.leases(me))

    async def xadd(self, fields: dict[bytes, bytes]) -> bytes:
        entry_id: Any = await self.redis.xadd(self.keys.stream(0), fields)  # type: ignore[arg-type]
        return bytes(entry_id)

    async def trim_below(self, entry_id: bytes) -> None:
        await self.redis.xtrim(self.keys.stream(0), minid=entry_id, approximate=False)

    async def owners(self) -> dict[bytes, str]:
        rows: Any = await self.redis.xpending_range(self.keys.stream(0), GROUP, "-", "+", 100)
        return {row["message_id"]: row["consumer"].decode() for row in rows}

    async def dlq_sources(self) -> list[str]:
        rows: Any = await self.redis.xrange(self.keys.dlq)
        return [fields[b"source"].decode() for _, fields in rows]

    async def applied(self) -> int | None:
        raw: Any = await self.redis.hget(self.keys.applied, "p0")
        return int(raw) if raw is not None else None

    async def raise_high_water(self, ts: int) -> None:
        await self.redis.zadd(self.keys.high_water, {HIGH_WATER_MEMBER: ts}, gt=True)

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def version(self, key: bytes) -> int | None:
        found: Any = await self.stack.search.get(
            index=self.stack.alias, id=key.decode(), realtime=True, ignore=404
        )
        return int(found["_version"]) if found.get("found") else None


@pytest.fixture(params=["model", "real"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "model":
        model = ModelBackend()
        try:
            yield model
        finally:
            model.loop.close()
        return
    async with stack_of(partitions=1) as stack:
        await ensure_groups(stack.redis, stack.keys, GROUP)
        await ensure_index(stack.search, stack.alias, retention_seconds=3600)
        yield RealBackend(stack)


def entry(n: int) -> dict[bytes, bytes]:
    return {b"ts": str(100 + n).encode(), b"op": b"d", b"key": f"k{n}".encode()}


async def add(backend: Backend, count: int) -> list[bytes]:
    return [await backend.xadd(entry(n)) for n in range(count)]


def ids_of(entries: Sequence[Any]) -> list[bytes]:
    return [e.id for e in entries]


# the stream store


async def test_new_entries_are_delivered_once_in_order(backend: Backend) -> None:
    ids = await add(backend, 4)
    a, b = backend.store("a"), backend.store("b")
    first = await a.read_new(0, 3, block=False)
    assert ids_of(first) == ids[:3]
    assert [e.attempts for e in first] == [0, 0, 0]
    assert ids_of(await b.read_new(0, 10, block=False)) == ids[3:]
    assert await a.read_new(0, 10, block=True) == []  # BLOCK ran out
    assert await backend.owners() == {ids[0]: "a", ids[1]: "a", ids[2]: "a", ids[3]: "b"}
    assert await a.pending_count(0) == 4


async def test_a_takeover_claims_every_pending_entry_oldest_first_with_attempts(
    backend: Backend,
) -> None:
    ids = await add(backend, 5)
    old, new = backend.store("old"), backend.store("new")
    await old.read_new(0, 5, block=False)
    # one bulk carried ids[1] and failed on it: one attempt (consumer.attempts)
    await old.settle(0, [], 0, sent=[ids[1]], charged=[ids[1]])
    cursor, claimed = await new.claim_pending(0, 10, b"0-0")
    assert cursor == b"0-0"
    assert [(e.id, e.attempts) for e in claimed] == [
        (ids[0], 0), (ids[1], 1), (ids[2], 0), (ids[3], 0), (ids[4], 0)
    ]  # fmt: skip
    assert await backend.owners() == dict.fromkeys(ids, "new")


async def test_autoclaim_pages_through_the_pending_list_with_its_cursor(backend: Backend) -> None:
    ids = await add(backend, 5)
    store = backend.store("me")
    await backend.store("old").read_new(0, 5, block=False)
    cursor, claimed = await store.claim_pending(0, 2, b"0-0")
    assert (ids_of(claimed), cursor) == (ids[:2], ids[2])
    cursor, claimed = await store.claim_pending(0, 2, cursor)
    assert (ids_of(claimed), cursor) == (ids[2:4], ids[4])
    cursor, claimed = await store.claim_pending(0, 2, cursor)
    assert (ids_of(claimed), cursor) == (ids[4:], b"0-0")


async def test_claims_drop_entries_trimmed_while_pending(backend: Backend) -> None:
    ids = await add(backend, 4)
    store = backend.store("me")
    await backend.store("old").read_new(0, 4, block=False)
    await backend.trim_below(ids[2])
    assert ids_of(await store.claim_ids(0, [ids[0], ids[2]])) == [ids[2]]
    assert await store.pending_count(0) == 3
    cursor, claimed = await store.claim_pending(0, 10, b"0-0")
    assert (ids_of(claimed), cursor) == ([ids[2], ids[3]], b"0-0")
    assert await store.pending_count(0) == 2


async def test_pending_below_is_exclusive_and_settle_reports_the_strays(backend: Backend) -> None:
    ids = await add(backend, 4)
    store = backend.store("me")
    await store.read_new(0, 4, block=False)
    assert await store.pending_below(0, ids[2], 10) == ids[:2]
    strays = await store.settle(0, [ids[0]], 1, check_below=ids[3], check_count=10)
    assert strays == ids[1:3]
    assert await store.pending_below(0, ids[3], 1) == [ids[1]]


async def test_settle_writes_letters_and_acknowledges(backend: Backend) -> None:
    ids = await add(backend, 2)
    store = backend.store("me")
    await store.read_new(0, 2, block=False)
    letter = DeadLetter(ts=100, op=b"d", key=b"k0", reason="test", source=f"p0/{ids[0].decode()}")
    assert await store.settle(0, [ids[0]], 1, [letter]) == []
    assert await backend.dlq_sources() == [letter.source]
    assert await backend.owners() == {ids[1]: "me"}


async def test_the_fence_marks_bulks_in_flight_and_a_takeover_counts_other_tokens(
    backend: Backend,
) -> None:
    ids = await add(backend, 2)
    a, b = backend.store("a"), backend.store("b")
    assert await backend.leases("a").acquire(0)
    await a.read_new(0, 2, block=False)
    assert await a.fence(0, "a/1", ids)
    assert not await b.fence(0, "b/1", ids)  # not b's lease: marks nothing
    assert await a.recover_attempts(0, "a/1") == 0  # its own markers: dropped, not counted
    assert await a.fence(0, "a/1", [ids[0]])
    assert await b.recover_attempts(0, "b/1") == 1  # a's bulk never came back
    assert await b.recover_attempts(0, "b/1") == 0
    _, claimed = await b.claim_pending(0, 10, b"0-0")
    assert [(e.id, e.attempts) for e in claimed] == [(ids[0], 1), (ids[1], 0)]


async def test_a_lease_is_exclusive_until_it_expires(backend: Backend) -> None:
    a, b = backend.leases("a"), backend.leases("b")
    assert await a.acquire(0)
    assert await a.acquire(0)  # ours already
    assert not await b.acquire(0)
    assert await a.renew([0]) == {0}
    now_ms, beats = await a.heartbeat()
    assert set(beats) == {"a"} and beats["a"] <= now_ms
    await backend.elapse(hold_seconds(TTL) + 0.1)
    assert await b.acquire(0)
    assert await a.renew([0]) == set()
    assert not await backend.store("a").fence(0, "a/1")
    await b.release(0)
    assert await a.acquire(0)


async def test_the_applied_frontier_only_rises(backend: Backend) -> None:
    store = backend.store("me")
    await store.advance(0, 10)
    await store.advance(0, 5)
    assert await backend.applied() == 10


async def test_the_high_water_mark_bounds_entries(backend: Backend) -> None:
    store = backend.store("me")
    await backend.raise_high_water(500)
    assert await store.ts_bound(400) == 500
    await backend.raise_high_water(900)
    assert await store.ts_bound(800) == 900
    await backend.xadd(encode_progress(900))  # an entry's id uses the stream clock: no effect


# the index sink


def outcomes(results: Sequence[Any]) -> list[tuple[Outcome, int | None, str]]:
    """Each item's outcome, with its status and error type when it was not applied (the
    real client reports every applied item of an error-free response as 200)."""
    out: list[tuple[Outcome, int | None, str]] = []
    for result in results:
        outcome = classify(result)
        if outcome is Outcome.APPLIED and result.status < 300:
            out.append((outcome, None, ""))
        else:
            out.append((outcome, result.status, result.error_type))
    return out


APPLIED = (Outcome.APPLIED, None, "")
CONFLICT = (Outcome.APPLIED, 409, "version_conflict_engine_exception")


async def test_external_versions_keep_the_newest_document(backend: Backend) -> None:
    sink = backend.sink
    doc = b'{"order_id":"k","sync_version":%d}'
    assert outcomes(await sink.send([Change(10, b"k", doc % 10)])) == [APPLIED]
    assert outcomes(await sink.send([Change(5, b"k", doc % 5)])) == [CONFLICT]
    assert outcomes(await sink.send([Change(10, b"k", doc % 10)])) == [APPLIED]  # equal: gte
    assert await backend.version(b"k") == 10


async def test_deletes_leave_a_tombstone_that_keeps_older_writes_out(backend: Backend) -> None:
    sink = backend.sink
    doc = b'{"sync_version":1}'
    await sink.send([Change(10, b"k", doc)])
    deleted = await sink.send([Change(20, b"k", None), Change(3, b"gone", None)])
    # a delete of a missing document is applied (404 without an error type, or 200)
    assert [classify(r) for r in deleted] == [Outcome.APPLIED, Outcome.APPLIED]
    later = await sink.send([Change(15, b"k", doc), Change(2, b"gone", doc)])
    assert outcomes(later) == [CONFLICT, CONFLICT]
    assert await backend.version(b"k") is None
    assert outcomes(await sink.send([Change(21, b"k", doc)])) == [APPLIED]
    assert await backend.version(b"k") == 21


async def test_a_document_the_mapping_refuses_is_rejected_alone(backend: Backend) -> None:
    results = await backend.sink.send(
        [Change(1, b"bad", POISON_DOC), Change(1, b"good", b'{"sync_version":1}')]
    )
    assert outcomes(results) == [(Outcome.REJECTED, 400, "mapper_parsing_exception"), APPLIED]
    assert await backend.version(b"good") == 1
    assert await backend.sink.answers()
