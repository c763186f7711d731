"""The simulator's digest store (tests.sim.polling.SimDigestStore) against real Redis.

The same steps run on producer.adapters.RedisDigestStore over the devstack Redis
(REDIS_URL from the environment or .devstack/env; a private view name, its keys
deleted afterwards) and on the model, and both must read back the same digests
after every step: fields being written, digests stored and dropped, an emptied hash
that no longer exists, MULTI/EXEC, UNLINK. Cuts between commands are not made on the
real side (a forwarder cannot cut inside one pipeline reliably); the model's cuts
leave a prefix of the commands applied, which is what Redis, running a pipeline's
commands one by one, can leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis

from searchsync.common.config import Settings
from searchsync.common.keys import Keys
from searchsync.producer.adapters import RedisDigestStore
from searchsync.producer.ports import DigestStore
from tests.sim.loop import VirtualLoop
from tests.sim.polling import SimDigestStore
from tests.sim.services import SimProcess
from tests.sim.world import World
from tests.support.producer import delete_view_keys, devstack_env, unique_view

HIGHEST = 2**64 - 1  # a digest is 8 bytes: the largest must survive the round trip
Seen = list[dict[str, int] | None]


async def steps(store: DigestStore) -> Seen:
    """What Poller does to the store, reading everything back after each step."""
    seen: Seen = [await store.load()]  # none kept yet
    await store.invalidate(["a", "b"])
    seen.append(await store.load())
    await store.remember({"a": 1, "b": HIGHEST}, [])
    seen.append(await store.load())
    await store.invalidate(["b"])
    await store.remember({}, ["b"])
    seen.append(await store.load())
    await store.remember({}, ["a"])  # the last field dropped: the hash is gone
    seen.append(await store.load())
    await store.remember_at_once({"c": 3, "d": 0}, ["missing"])
    seen.append(await store.load())
    await store.forget_all()
    seen.append(await store.load())
    return seen


EXPECTED: Seen = [
    None,
    {"a": -1, "b": -1},
    {"a": 1, "b": HIGHEST},
    {"a": 1},
    None,
    {"c": 3, "d": 0},
    None,
]


async def on_redis() -> Seen:
    client = Redis.from_url(devstack_env()["REDIS_URL"])
    view = unique_view()
    try:
        return await steps(RedisDigestStore(client, Keys(view, 1)))
    finally:
        await delete_view_keys(client, view)
        await client.aclose()


def on_model() -> Seen:
    loop = VirtualLoop()
    world = World(0, loop, Settings(stream_partitions=1), 1)
    store = SimDigestStore(world, SimProcess(world, "P0"))
    work: Coroutine[Any, Any, Seen] = steps(store)
    try:
        return loop.run_until_complete(work)
    finally:
        loop.close()


def test_the_digest_store_model_reads_back_what_redis_does() -> None:
    real = asyncio.run(on_redis())
    assert real == EXPECTED
    assert on_model() == real
