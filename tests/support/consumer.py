"""Shared setup for the consumer's integration and fault tests (real Redis, real OpenSearch).

Addresses come from the environment (``source .devstack/env``), falling back to
reading ``.devstack/env`` itself. Every test gets its own view name (so its own
``searchsync:<view>:*`` keys) and its own index alias ``test_cons_<random>``;
:func:`cleanup` deletes exactly those keys and indices — never FLUSHALL: Redis
and OpenSearch are shared with the demo and other tests.

A private redis-server and a TCP proxy to cut are in tests.support.services; the
consumer process (:class:`ConsumerProcess`) is in devstack.harness.consumer, shared
with bench/, and re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from opensearchpy import AsyncOpenSearch, NotFoundError
from redis.asyncio import Redis

from devstack.harness.consumer import PYTHON, ROOT, ConsumerProcess, service_env
from searchsync.common.config import Settings, load_settings
from searchsync.common.entries import encode_changes, encode_progress, encode_reconcile
from searchsync.common.keys import Keys
from searchsync.common.partition import partition_of
from searchsync.common.partition_state import merge_counts, queue_counts, read_applied
from searchsync.common.streams import ensure_groups
from tests.support.services import PrivateRedis

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition

__all__ = [
    "GROUP",
    "PYTHON",
    "ROOT",
    "ConsumerProcess",
    "LoadWriter",
    "OrderWatcher",
    "Stack",
    "cleanup",
    "make_stack",
    "orders",
    "running_worker",
    "service_env",
    "stack_fixture",
    "stack_of",
    "wait_for",
]

GROUP = "searchsync"


@dataclass
class Stack:
    """One test's private view, partitions, index alias, and clients."""

    view: str
    alias: str
    partitions: int
    keys: Keys
    redis: Redis
    search: AsyncOpenSearch
    env: dict[str, str]

    def settings(self, **overrides: object) -> Settings:
        return load_settings(self.consumer_env(**overrides))

    def consumer_env(self, **overrides: object) -> dict[str, str]:
        """Environment for a consumer of this stack (add os.environ for a subprocess)."""
        env = {
            **self.env,
            "VIEW_NAME": self.view,
            "OS_INDEX_NAME": self.alias,
            "STREAM_PARTITIONS": str(self.partitions),
            "CONSUMER_GROUP": GROUP,
            "LEASE_TTL_SECONDS": "2",
            "RETRY_INITIAL_BACKOFF": "0.1",
            "RETRY_MAX_BACKOFF": "1",
            "MAX_BATCH_SIZE": "200",
            "LOG_FORMAT": "text",
            "STREAM_RETENTION_SECONDS": "3600",
        }
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    # writing entries as the producer does

    async def write(
        self, ts: int, changes: Sequence[tuple[str, dict[str, Any] | None]], *, batch: bool = True
    ) -> None:
        """XADD ``changes`` at ``ts``: one entry per partition (``b``) or per change.

        Documents get ``sync_version`` = ts, as the producer writes them. Bumps
        ``counts`` ``written:p<N>`` like the producer.
        """
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, doc in changes:
            raw_key = key.encode()
            body = None if doc is None else msgspec.json.encode({**doc, "sync_version": ts})
            by_partition.setdefault(partition_of(raw_key, self.partitions), []).append(
                (raw_key, body)
            )
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition, items in by_partition.items():
                groups = [items] if batch else [[item] for item in items]
                for group in groups:
                    pipe.xadd(self.keys.stream(partition), encode_changes(ts, group))  # type: ignore[arg-type]
                pipe.hincrby(
                    self.keys.counts(partition), self.keys.written_field(partition), len(items)
                )
            await pipe.execute()

    async def raw_entry(self, partition: int, fields: Mapping[bytes, bytes]) -> bytes:
        entry_id: Any = await self.redis.xadd(self.keys.stream(partition), dict(fields))  # type: ignore[arg-type]
        return bytes(entry_id)

    async def progress(self, ts: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in range(self.partitions):
                pipe.xadd(self.keys.stream(partition), encode_progress(ts))  # type: ignore[arg-type]
            await pipe.execute()

    async def reconcile_marker(self, ts: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in range(self.partitions):
                pipe.xadd(self.keys.stream(partition), encode_reconcile(ts))  # type: ignore[arg-type]
            pipe.hset(self.keys.reconcile, str(ts), "pending")
            await pipe.execute()

    # reading state back

    async def documents(self) -> dict[str, dict[str, Any]]:
        """Every document behind the alias, by id (after a refresh)."""
        await self.search.indices.refresh(index=self.alias)
        found: dict[str, dict[str, Any]] = {}
        response = await self.search.search(
            index=self.alias,
            body={"query": {"match_all": {}}, "size": 10_000, "version": True},
        )
        for hit in response["hits"]["hits"]:
            found[hit["_id"]] = {**hit["_source"], "_version": hit["_version"]}
        return found

    async def outstanding(self) -> int:
        """Entries not yet acknowledged by the group (lag + pending) over all partitions."""
        total = 0
        for stream in self.keys.streams():
            if not await self.redis.exists(stream):
                continue
            groups = await self.redis.xinfo_groups(stream)
            mine = [g for g in groups if g["name"] in (GROUP, GROUP.encode())]
            if not mine:  # no consumer has started yet: everything is outstanding
                total += int(await self.redis.xlen(stream))
            for info in mine:
                total += int(info["pending"]) + int(info["lag"] or 0)
        return total

    async def pending(self) -> int:
        total = 0
        for stream in self.keys.streams():
            if await self.redis.exists(stream):
                summary = await self.redis.xpending(stream, GROUP)
                total += int(summary["pending"])
        return total

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        rows: Any = await self.redis.xrange(self.keys.dlq)
        return [fields for _, fields in rows]

    async def applied(self) -> dict[int, int]:
        raw = await read_applied(self.redis, self.keys)
        return {int(k.decode()[1:]): int(v) for k, v in raw.items()}

    async def counts(self) -> tuple[int, int]:
        """Changes written (by the test's producer role) and acknowledged, over all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_counts(pipe, self.keys)
            raw = merge_counts(await pipe.execute())
        written = sum(int(v) for k, v in raw.items() if k.startswith(b"written:"))
        acked = sum(int(v) for k, v in raw.items() if k.startswith(b"acked:"))
        return written, acked

    async def lease_holders(self) -> list[str | None]:
        values: Any = await self.redis.mget([self.keys.lease(p) for p in range(self.partitions)])
        return [v.decode() if v is not None else None for v in values]


async def make_stack(partitions: int = 4, redis_url: str | None = None) -> Stack:
    env = service_env()
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    tag = uuid.uuid4().hex[:10]
    redis = Redis.from_url(env["REDIS_URL"])
    search = AsyncOpenSearch(
        hosts=[{"host": env["OS_HOST"], "port": int(env["OS_PORT"])}], timeout=30, max_retries=0
    )
    view = f"test_cons_{tag}"
    return Stack(view, f"test_cons_{tag}", partitions, Keys(view, partitions), redis, search, env)


@contextlib.asynccontextmanager
async def stack_of(partitions: int = 4, redis_url: str | None = None) -> AsyncIterator[Stack]:
    """:func:`make_stack`, and :func:`cleanup` afterwards (a test's ``stack`` fixture)."""
    stack = await make_stack(partitions, redis_url)
    try:
        yield stack
    finally:
        await cleanup(stack)


def stack_fixture(
    partitions: int, *, private_redis: bool = False, groups: bool = False
) -> FixtureFunctionDefinition:
    """A test module's stack fixture, named after the variable it is assigned to::

        stack = stack_fixture(partitions=2)

    ``private_redis``: on the ``private_redis`` fixture's server instead of the shared
    Redis (its keys are left alone if the test left that server down); ``groups``:
    the consumer group exists on every partition before the test starts. Teardown:
    :func:`cleanup`.
    """
    if private_redis:

        async def on_private_redis(private_redis: PrivateRedis) -> AsyncIterator[Stack]:
            s = await make_stack(partitions, redis_url=private_redis.url)
            try:
                if groups:
                    await ensure_groups(s.redis, s.keys, GROUP)
                yield s
            finally:
                if private_redis.proc is not None and private_redis.proc.poll() is None:
                    await cleanup(s)
                else:
                    await s.search.close()

        return pytest.fixture(on_private_redis)

    async def on_shared_redis() -> AsyncIterator[Stack]:
        async with stack_of(partitions) as s:
            if groups:
                await ensure_groups(s.redis, s.keys, GROUP)
            yield s

    return pytest.fixture(on_shared_redis)


def orders(
    start: int, count: int, status: str | None = "PLACED", **fields: object
) -> list[tuple[str, dict[str, Any] | None]]:
    """``count`` orders from ``order:FM-<start>`` as (key, document) for :meth:`Stack.write`:
    ``order_id``, ``order_status`` (none if ``status`` is None), then ``fields``."""
    return [
        (
            f"order:FM-{n}",
            {"order_id": f"order:FM-{n}"}
            | ({} if status is None else {"order_status": status})
            | fields,
        )
        for n in range(start, start + count)
    ]


async def cleanup(stack: Stack) -> None:
    """Delete this stack's Redis keys and indices, and close its clients."""
    async for key in stack.redis.scan_iter(match=stack.keys.pattern, count=1000):
        await stack.redis.delete(key)
    with contextlib.suppress(NotFoundError):
        indices = await stack.search.cat.indices(index=f"{stack.alias}*", format="json", h="index")
        names = sorted(row["index"] for row in indices)
        if names:
            await stack.search.indices.delete(index=",".join(names))
    await stack.redis.aclose()
    await stack.search.close()


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], limit: float, what: str, every: float = 0.1
) -> float:
    """Poll ``predicate`` until true; return seconds waited. AssertionError after ``limit`` s."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Any]:
    """A consumer (consumer.worker.Worker) running in this event loop until the block ends."""
    from prometheus_client import CollectorRegistry

    from searchsync.common.opensearch import make_client
    from searchsync.consumer.metrics import ConsumerMetrics
    from searchsync.consumer.worker import Worker

    redis = Redis.from_url(settings.redis_url)
    client = make_client(settings)
    metrics = ConsumerMetrics(CollectorRegistry(), settings.consumer_identity())
    worker = Worker(settings, redis, client, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await client.close()
        await redis.aclose()


class LoadWriter:
    """Writes numbered versions of ``keys`` until stopped, like a busy producer.

    Every write bumps the key's sequence number (``seq`` in the document) and
    uses a strictly increasing ts, so the newest document of a key is the one
    with the highest ``seq``. Progress entries follow every round.
    """

    def __init__(self, stack: Stack, keys: int, per_round: int, interval: float) -> None:
        self.stack = stack
        self.keys = [f"order:FM-{n}" for n in range(keys)]
        self.per_round = per_round
        self.interval = interval
        self.last_seq: dict[str, int] = {}
        self.changes = 0
        self._ts = int(time.time() * 1000)
        self._rounds = 0

    def _next_ts(self) -> int:
        self._ts = max(self._ts + 1, int(time.time() * 1000))
        return self._ts

    async def write_round(self) -> None:
        start = (self._rounds * self.per_round) % len(self.keys)
        chosen = [self.keys[(start + i) % len(self.keys)] for i in range(self.per_round)]
        self._rounds += 1
        ts = self._next_ts()
        batch = []
        for key in dict.fromkeys(chosen):
            seq = self.last_seq.get(key, 0) + 1
            self.last_seq[key] = seq
            batch.append((key, {"order_id": key, "order_status": "PLACED", "seq": seq}))
        await self.stack.write(ts, batch)
        await self.stack.progress(self._next_ts())
        self.changes += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.write_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


class OrderWatcher:
    """Samples documents while consumers work; records any ``seq`` that went backwards."""

    def __init__(self, stack: Stack, keys: Sequence[str]) -> None:
        self.stack = stack
        self.keys = list(keys)
        self.seen: dict[str, int] = {}
        self.regressions: list[tuple[str, int, int]] = []
        self.samples = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                response = await self.stack.search.mget(
                    index=self.stack.alias, body={"ids": self.keys}, params={"realtime": "true"}
                )
            except NotFoundError:  # the consumers have not created the index yet
                response = {"docs": []}
            for doc in response["docs"]:
                if not doc.get("found"):
                    continue
                seq = int(doc["_source"]["seq"])
                before = self.seen.get(doc["_id"], 0)
                if seq < before:
                    self.regressions.append((doc["_id"], before, seq))
                self.seen[doc["_id"]] = max(seq, before)
            self.samples += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
