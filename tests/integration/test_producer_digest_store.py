"""producer/adapters.RedisDigestStore fenced by the producer lease (USE_SUBSCRIBE=false).

A poller paused past its lease used to store its digests over what its successors
wrote meanwhile, or recreate a hash a successor had dropped by marking its keys as
being written; the next poll then missed a delete (``python -m tests.sim --seed 350
--polling``). Needs: the devstack Redis. Keys live under a random view name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from searchsync.common.keys import Keys
from searchsync.producer.adapters import RedisDigestStore
from searchsync.producer.lease import ProducerFenced, ProducerLease
from tests.support.producer import delete_view_keys, devstack_env, unique_view


@pytest.fixture
async def redis_keys() -> AsyncIterator[tuple[Redis, Keys]]:
    client = Redis.from_url(devstack_env()["REDIS_URL"])
    view = unique_view()
    try:
        yield client, Keys(view, 2)
    finally:
        await delete_view_keys(client, view)
        await client.aclose()


async def test_the_digests_are_stored_only_under_the_sessions_lease(
    redis_keys: tuple[Redis, Keys],
) -> None:
    client, keys = redis_keys
    ours = ProducerLease(client, keys, "a", ttl_seconds=5)
    assert await ours.try_acquire()
    store = RedisDigestStore(client, keys, ours.value)
    await store.invalidate(["k1", "k2"])
    assert await store.load() == {"k1": -1, "k2": -1}
    await store.remember({"k1": 7, "k2": 8}, [])
    await store.remember_at_once({"k3": 9}, ["k2"])
    assert await store.load() == {"k1": 7, "k3": 9}

    await client.delete(keys.producer_lease)  # ours expired while the poller was paused
    theirs = ProducerLease(client, keys, "b", ttl_seconds=5)
    assert await theirs.try_acquire()
    for call in (
        store.remember({"k1": 1}, ["k3"]),
        store.remember_at_once({"k1": 1}, ["k3"]),
        store.invalidate(["k9"]),
    ):
        with pytest.raises(ProducerFenced):
            await call
    assert await store.load() == {"k1": 7, "k3": 9}
    await RedisDigestStore(client, keys, theirs.value).forget_all()  # the successor
    with pytest.raises(ProducerFenced):
        await store.invalidate(["k9"])  # would make a digest set of one key
    assert await store.load() is None  # the next poll reads everything


async def test_more_digests_than_one_script_takes_are_all_stored(
    redis_keys: tuple[Redis, Keys],
) -> None:
    # more fields than one script holds (5000) and than Lua's unpack takes at once
    client, keys = redis_keys
    lease = ProducerLease(client, keys, "a", ttl_seconds=5)
    assert await lease.try_acquire()
    store = RedisDigestStore(client, keys, lease.value)
    digests = {f"k{n}": n for n in range(12_001)}
    await store.remember(digests, [])
    await store.remember_at_once({"extra": 1}, [f"k{n}" for n in range(6_000)])
    assert await store.load() == {**{f"k{n}": n for n in range(6_000, 12_001)}, "extra": 1}
