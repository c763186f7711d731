"""The simulator's digest store (tests.sim.polling.SimDigestStore) against real Redis.

The same steps run on producer.adapters.RedisDigestStore over the devstack Redis
(REDIS_URL from the environment or .devstack/env; a private view name, its keys
deleted afterwards) and on the model, and both must read back the same digests
after every step: fields being written, digests stored and dropped, an emptied hash
that no longer exists, MULTI/EXEC, UNLINK; and, fenced by a producer lease another
producer took over, the writes refused. Cuts between commands are not made on the
real side (a forwarder cannot cut inside one pipeline reliably); the model's cuts
leave a prefix of the commands applied, which is what Redis, running a pipeline's
commands one by one, can leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from redis.asyncio import Redis

from searchsync.common.config import Settings
from searchsync.common.keys import Keys
from searchsync.producer.adapters import RedisDigestStore
from searchsync.producer.lease import ProducerFenced
from searchsync.producer.ports import DigestStore
from tests.sim.loop import VirtualLoop
from tests.sim.polling import SimDigestStore
from tests.sim.services import SimProcess
from tests.sim.world import World
from tests.support.producer import delete_view_keys, devstack_env, unique_view

HIGHEST = 2**64 - 1  # a digest is 8 bytes: the largest must survive the round trip
Seen = list[dict[str, int] | None]


async def steps(
    store: DigestStore, take_over: Callable[[], Awaitable[object]] | None = None
) -> Seen:
    """What Poller does to the store, reading everything back after each step; with
    ``take_over`` (another producer takes the lease) then what a fenced store refuses."""
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
    if take_over is None:
        return seen
    await store.remember({"e": 5}, [])
    await take_over()
    for refused in (
        store.remember({"e": 6}, []),
        store.remember_at_once({"f": 6}, ["e"]),
        store.invalidate(["g"]),
    ):
        try:
            await refused
        except ProducerFenced:
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


FENCED: Seen = [*EXPECTED, {"e": 5}, {"e": 5}, {"e": 5}]
LEASE = "1:P0"


async def on_redis(fenced: bool) -> Seen:
    client = Redis.from_url(devstack_env()["REDIS_URL"])
    view = unique_view()
    keys = Keys(view, 1)
    try:
        if not fenced:
            return await steps(RedisDigestStore(client, keys))
        await client.set(keys.producer_lease, LEASE)
        store = RedisDigestStore(client, keys, LEASE)
        return await steps(store, lambda: client.set(keys.producer_lease, "2:P1"))
    finally:
        await delete_view_keys(client, view)
        await client.aclose()


def on_model(fenced: bool) -> Seen:
    loop = VirtualLoop()
    world = World(0, loop, Settings(stream_partitions=1), 1)
    process = SimProcess(world, "P0")
    work: Coroutine[Any, Any, Seen]
    if fenced:
        lease = world.keys.producer_lease
        world.redis.strings[lease] = (LEASE, None)

        async def take_over() -> None:
            world.redis.strings[lease] = ("2:P1", None)

        work = steps(SimDigestStore(world, process, lease=LEASE), take_over)
    else:
        work = steps(SimDigestStore(world, process))
    try:
        return loop.run_until_complete(work)
    finally:
        loop.close()


@pytest.mark.parametrize("fenced", [False, True])
def test_the_digest_store_model_reads_back_what_redis_does(fenced: bool) -> None:
    real = asyncio.run(on_redis(fenced))
    assert real == (FENCED if fenced else EXPECTED)
    assert on_model(fenced) == real
