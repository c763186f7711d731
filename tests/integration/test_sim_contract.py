"""The simulator's models (tests/sim) against the real Redis and OpenSearch of the devstack.

Every check runs twice: on the in-memory models through the simulator's adapters
(tests.sim.services, tests.sim.producer) and on the devstack through the production
adapters (consumer.adapters.RedisStreamStore, consumer.leases.Leases,
consumer.sender.BulkSender, producer.writer.StreamWriter). When Redis or OpenSearch
behave differently from the model, the same check fails on one side only, so the
simulator cannot drift from the services it stands in for. Each real run has its
own view name and index alias, deleted afterwards.

Faults checked on both sides: a bulk with one item the mapping refuses (the others
applied), an external version conflict, a delete's tombstone forgotten after
``index.gc_deletes`` (OpenSearch ignores a tombstone older than gc_deletes when it
looks a version up, by its clock cached every 200 ms: a wait of gc_deletes + 0.5 s
makes it certain; the refresh that prunes tombstones is not needed), a bulk applied
whose answer is lost and Redis commands that ran whose replies are lost (a TCP
forwarder, :class:`ReplyCutter`, that forwards the request and closes the client's
connection instead of passing the answer back). Not produced for real here: 429s
(OpenSearch answers 429 when its write queue is full, a node setting: only by
starving the node; the model's 429s are checked by the consumer's unit tests of
consumer.outcomes against OpenSearch's documented answers), a connection cut before
the command reached the server (indistinguishable from Redis or OpenSearch being
down, which the fault tests cover), and a pipeline cut between two of its commands
(Redis runs a pipeline's commands one by one, so a cut leaves a prefix applied; a
forwarder cannot cut inside one write reliably).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from searchsync.common.config import Settings
from searchsync.common.entries import Change, DeadLetter, encode_progress
from searchsync.common.index import ensure_index
from searchsync.common.keys import Keys
from searchsync.common.opensearch import make_client
from searchsync.common.redis_client import connect_redis
from searchsync.common.streams import ensure_groups
from searchsync.consumer.adapters import RedisStreamStore
from searchsync.consumer.highwater import HIGH_WATER_MEMBER
from searchsync.consumer.leases import Leases, hold_seconds
from searchsync.consumer.outcomes import Outcome, classify
from searchsync.consumer.ports import IndexSink, LeaseStore, StreamStore
from searchsync.consumer.reconcile import Reconciler
from searchsync.consumer.sender import BulkFailed, BulkSender
from searchsync.producer.batches import build_entries
from searchsync.producer.lease import ProducerFenced
from searchsync.producer.ports import EntrySink
from searchsync.producer.writer import StreamWriter
from tests.sim.index import POISON_DOC
from tests.sim.loop import VirtualLoop
from tests.sim.producer import SimEntrySink
from tests.sim.reconcile import SimReconciler
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

    async def set_gc_deletes(self, seconds: float) -> None:
        """The index's ``index.gc_deletes``."""
        raise NotImplementedError

    async def lossy(self) -> tuple[IndexSink, StreamStore]:
        """A sink and a store (consumer ``me``) whose every call runs on the server and
        loses its answer."""
        raise NotImplementedError

    def entry_sink(self, lease: Callable[[], str]) -> EntrySink:
        """The producer's entry sink, fenced by the lease value ``lease()``."""
        raise NotImplementedError

    async def set_producer_lease(self, value: str) -> None:
        raise NotImplementedError

    async def stream_fields(self, name: str) -> list[dict[bytes, bytes]]:
        """The fields of every entry of stream key ``name``, oldest first."""
        raise NotImplementedError

    async def checkpoint(self) -> int | None:
        raise NotImplementedError

    async def high_water(self) -> float | None:
        raise NotImplementedError

    async def counts(self) -> dict[bytes, bytes]:
        raise NotImplementedError

    def reconciler(self, me: str) -> Reconciler | SimReconciler:
        """What a consumer runs to reconcile after a snapshot (consumer.reconcile)."""
        raise NotImplementedError

    async def hold_reconcile_lock(self, holder: str, ms: int) -> None:
        """``holder`` takes ``reconcile:lock`` for ``ms`` milliseconds."""
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
        raw = self.redis.get(self.keys.applied(0))
        return int(raw) if raw is not None else None

    async def raise_high_water(self, ts: int) -> None:
        self.redis.zset(self.keys.high_water)[HIGH_WATER_MEMBER.decode()] = ts

    async def elapse(self, seconds: float) -> None:
        self.loop.now += seconds

    async def version(self, key: bytes) -> int | None:
        doc = self.world.index.current(key)
        return doc.version if doc is not None and doc.source is not None else None

    async def set_gc_deletes(self, seconds: float) -> None:
        self.world.index.gc_deletes = seconds

    async def lossy(self) -> tuple[IndexSink, StreamStore]:
        process = SimProcess(self.world, "me")
        process.lossy = True
        return SimSink(self.world, process), SimStreamStore(self.world, process)

    def entry_sink(self, lease: Callable[[], str]) -> EntrySink:
        process = SimProcess(self.world, "producer")
        return SimEntrySink(self.world, process, progress_interval_ms=1, lease=lease)

    async def set_producer_lease(self, value: str) -> None:
        self.redis.strings[self.keys.producer_lease] = (value, None)

    def reconciler(self, me: str) -> SimReconciler:
        return SimReconciler(self.world, SimProcess(self.world, me))

    async def hold_reconcile_lock(self, holder: str, ms: int) -> None:
        self.redis.set_px(self.keys.reconcile_lock, holder, ms)

    async def stream_fields(self, name: str) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in self.redis.xrange(name)]

    async def checkpoint(self) -> int | None:
        raw = self.redis.get(self.keys.checkpoint)
        return None if raw is None else int(raw)

    async def high_water(self) -> float | None:
        return self.redis.zset(self.keys.high_water).get(HIGH_WATER_MEMBER.decode())

    async def counts(self) -> dict[bytes, bytes]:
        return dict(self.redis.hash(self.keys.counts(0)))


class RealBackend(Backend):
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.keys = stack.keys
        self.redis = stack.redis
        self.sink = BulkSender(stack.search, stack.alias, 10.0)
        self.closers: list[Callable[[], Any]] = []

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
        raw: Any = await self.redis.get(self.keys.applied(0))
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

    async def set_gc_deletes(self, seconds: float) -> None:
        body = {"index": {"gc_deletes": f"{int(seconds * 1000)}ms"}}
        await self.stack.search.indices.put_settings(index=self.stack.alias, body=body)

    async def lossy(self) -> tuple[IndexSink, StreamStore]:
        search_cut = await self._cutter(self.stack.env["OS_HOST"], int(self.stack.env["OS_PORT"]))
        redis_cut = await self._cutter(
            "127.0.0.1", self.redis.connection_pool.connection_kwargs["port"]
        )
        settings = self.stack.settings(
            OS_HOST="127.0.0.1",
            OS_PORT=search_cut.port,
            REDIS_URL=f"redis://127.0.0.1:{redis_cut.port}/0",
        )
        search = make_client(settings)
        redis = connect_redis(settings)
        self.closers += [search.close, redis.aclose]
        await redis.ping()  # the connection is made (and named) before replies are cut
        search_cut.cut = redis_cut.cut = True
        sink = BulkSender(search, self.stack.alias, 10.0)
        leases = Leases(redis, self.keys, "me", TTL)
        return sink, RedisStreamStore(redis, self.keys, GROUP, "me", leases)

    async def _cutter(self, host: str, port: int) -> ReplyCutter:
        cutter = ReplyCutter(host, port)
        await cutter.start()
        self.closers.append(cutter.close)
        return cutter

    def entry_sink(self, lease: Callable[[], str]) -> EntrySink:
        return StreamWriter(self.redis, self.keys, progress_interval_ms=1, lease=lease)

    async def set_producer_lease(self, value: str) -> None:
        await self.redis.set(self.keys.producer_lease, value)

    def reconciler(self, me: str) -> Reconciler:
        return Reconciler(self.redis, self.stack.search, self.keys, self.stack.alias, me)

    async def hold_reconcile_lock(self, holder: str, ms: int) -> None:
        await self.redis.set(self.keys.reconcile_lock, holder, px=ms)

    async def stream_fields(self, name: str) -> list[dict[bytes, bytes]]:
        rows: Any = await self.redis.xrange(name)
        return [dict(fields) for _, fields in rows]

    async def checkpoint(self) -> int | None:
        raw: Any = await self.redis.get(self.keys.checkpoint)
        return None if raw is None else int(raw)

    async def high_water(self) -> float | None:
        score: Any = await self.redis.zscore(self.keys.high_water, HIGH_WATER_MEMBER)
        return None if score is None else float(score)

    async def counts(self) -> dict[bytes, bytes]:
        found: Any = await self.redis.hgetall(self.keys.counts(0))
        return dict(found)


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
        real = RealBackend(stack)
        try:
            yield real
        finally:
            for close in reversed(real.closers):
                with contextlib.suppress(Exception):
                    await close()


class ReplyCutter:
    """A TCP forwarder to ``host:port`` that, once :attr:`cut` is set, drops whatever the
    server answers and closes the client's connection: the request reached the server
    and ran there, the client sees the connection lost."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self.target)

        async def up() -> None:
            while data := await client_r.read(65536):
                upstream_w.write(data)
                await upstream_w.drain()

        async def down() -> None:
            while data := await upstream_r.read(65536):
                if self.cut:  # the answer is lost on the way back
                    break
                client_w.write(data)
                await client_w.drain()
            client_w.close()
            upstream_w.close()

        tasks = {asyncio.create_task(up()), asyncio.create_task(down())}
        self._tasks |= tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        client_w.close()
        upstream_w.close()


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


async def test_the_snapshot_floor_is_raised_with_the_xack_and_only_rises(backend: Backend) -> None:
    ids = await add(backend, 3)
    store, next_owner = backend.store("me"), backend.store("next")
    await store.read_new(0, 3, block=False)
    assert await store.snapshot_floor(0) is None  # no marker acknowledged yet
    await store.settle(0, [ids[0]], 0, floor=3000)
    await store.settle(0, [ids[1]], 0, floor=2000)  # an old marker read again
    assert await next_owner.snapshot_floor(0) == 3000
    await store.settle(0, [ids[2]], 1)  # no marker: the floor stays
    assert await next_owner.snapshot_floor(0) == 3000
    assert await backend.owners() == {}


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


# faults, as the real services show them


async def test_a_tombstone_is_forgotten_after_gc_deletes(backend: Backend) -> None:
    await backend.set_gc_deletes(2.0)
    sink = backend.sink
    doc = b'{"sync_version":1}'
    await sink.send([Change(10, b"k", doc)])
    assert outcomes(await sink.send([Change(20, b"k", None)])) == [APPLIED]
    assert outcomes(await sink.send([Change(15, b"k", doc)])) == [CONFLICT]  # kept yet
    # past gc_deletes, plus OpenSearch's clock cached every 200 ms
    await backend.elapse(2.5)
    assert outcomes(await sink.send([Change(15, b"k", doc)])) == [APPLIED]  # forgotten
    assert await backend.version(b"k") == 15


async def test_a_bulk_applied_whose_answer_is_lost(backend: Backend) -> None:
    sink, _ = await backend.lossy()
    doc = b'{"sync_version":7}'
    with pytest.raises(BulkFailed) as failed:
        await sink.send([Change(7, b"k", doc), Change(7, b"gone", None)])
    assert failed.value.status is None  # no answer at all: retried, never dead-lettered
    assert await backend.version(b"k") == 7  # it ran
    # sending it again (what the consumer does) is harmless: equal versions are accepted
    assert outcomes(await backend.sink.send([Change(7, b"k", doc)])) == [APPLIED]


async def test_redis_commands_that_ran_whose_replies_are_lost(backend: Backend) -> None:
    ids = await add(backend, 3)
    await backend.store("old").read_new(0, 3, block=False)
    _, store = await backend.lossy()
    with pytest.raises(RedisConnectionError):
        await store.settle(0, [ids[0]], 1)  # XACK and the count ran
    assert await backend.owners() == {ids[1]: "old", ids[2]: "old"}
    assert await backend.counts() == {b"acked:p0": b"1"}


# the producer's entry sink (producer.writer.StreamWriter on Redis)


async def test_the_entry_sink_writes_entries_then_moves_a_fenced_checkpoint_only_up(
    backend: Backend,
) -> None:
    holder = "1:me"
    await backend.set_producer_lease(holder)
    sink = backend.entry_sink(lambda: holder)
    doc = b'{"order_id":"a","sync_version":100}'
    entries = build_entries([(100, b"a", doc), (100, b"b", None), (101, b"a", doc)], 1)
    letter = DeadLetter(ts=100, op=b"u", key=b"x", reason="key violation", source="producer")
    await sink.write(entries, [letter], high_water=101)
    stream = backend.keys.stream(0)
    written = await backend.stream_fields(stream)
    assert written == [e.fields for e in entries]
    assert await backend.high_water() == 101
    assert await backend.counts() == {b"written:p0": b"3"}
    assert [f[b"source"] for f in await backend.stream_fields(backend.keys.dlq)] == [b"producer"]
    await sink.commit(102)  # the checkpoint and the mark, then progress (1 ms pacing)
    assert await backend.checkpoint() == 102
    assert (await backend.stream_fields(stream))[len(entries) :] == [encode_progress(102)]
    assert await backend.high_water() == 102
    assert await sink.read_high_water() == 102  # what a start plan reads (producer.resume)
    await backend.elapse(0.01)
    await sink.commit(90)  # never back; the frontier did not move: no progress entry
    assert await backend.checkpoint() == 102
    assert len(await backend.stream_fields(stream)) == len(entries) + 1
    await backend.set_producer_lease("2:other")  # a standby took over
    await backend.elapse(0.01)
    with pytest.raises(ProducerFenced):
        await sink.commit(110)
    assert await backend.checkpoint() == 102
    # refused before its progress entries and the mark: none is above what a successor
    # read on taking the lease
    assert (await backend.stream_fields(stream))[-1] == encode_progress(102)
    assert await backend.high_water() == 102
    with pytest.raises(ValueError):
        await sink.write(entries)  # entries without their high-water mark


# the reconcile after a snapshot that replaced lost history (consumer.reconcile)


async def test_a_reconcile_deletes_once_only_documents_older_than_its_snapshot(
    backend: Backend,
) -> None:
    sink = backend.sink
    doc = b'{"sync_version":%d}'
    await sink.send([Change(100, b"old", doc % 100), Change(300, b"new", doc % 300)])
    await backend.set_producer_lease("1:me")
    await backend.entry_sink(lambda: "1:me").mark_reconcile(200)
    reconciler = backend.reconciler("me")
    assert await reconciler.run_due() == []  # p0 has not applied the snapshot yet
    await backend.store("me").advance(0, 201)
    await backend.hold_reconcile_lock("other", 300)  # another consumer is at it
    assert await reconciler.run_due() == []
    assert await backend.version(b"old") == 100
    await backend.elapse(0.4)  # it died: its lock expires, the reconcile is still pending
    assert await reconciler.run_due() == [200]
    assert await backend.version(b"old") is None
    assert await backend.version(b"new") == 300
    assert await reconciler.run_due() == []  # done once


async def test_a_reconciles_tombstones_refuse_stale_writes_below_its_snapshot(
    backend: Backend,
) -> None:
    sink = backend.sink
    doc = b'{"sync_version":%d}' % 100
    await sink.send([Change(100, b"old", doc), Change(200, b"snap", doc)])
    await backend.set_producer_lease("1:me")
    await backend.entry_sink(lambda: "1:me").mark_reconcile(200)
    await backend.store("me").advance(0, 201)
    assert await backend.reconciler("me").run_due() == [200]
    # its deletes are at T (external): a late write of the lost history, at the deleted
    # version or anywhere below T, is refused; the snapshot's own rows at T are kept
    for ts in (100, 101, 199):
        assert outcomes(await sink.send([Change(ts, b"old", doc)])) == [CONFLICT]
    assert await backend.version(b"old") is None
    assert await backend.version(b"snap") == 200
    assert outcomes(await sink.send([Change(200, b"old", doc)])) == [APPLIED]
