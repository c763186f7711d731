"""consumer/reconcile.py on the devstack OpenSearch: a reconcile's deletes leave tombstones at T.

After a lost-history snapshot at T the reconcile deletes every document below T. A
write below T that arrives afterwards (a producer paused past its lease, a bulk held
on the way by a consumer that lost its lease) must be refused, or it brings back a
document the view no longer has and nothing deletes it again. ``_delete_by_query``
left its tombstone at the document's version + 1, so such a write between that and
T was accepted. The writes here go through the consumer's bulk path (BulkSender,
external_gte), and the refusal is a version conflict, which consumer.outcomes counts
as applied (acknowledged, not retried).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from searchsync.common.entries import Change
from searchsync.common.index import ensure_index, index_body
from searchsync.common.keys import RECONCILE_DONE, RECONCILE_PENDING
from searchsync.consumer import reconcile
from searchsync.consumer.outcomes import Outcome, classify
from searchsync.consumer.reconcile import Reconciler
from searchsync.consumer.sender import BulkSender
from tests.support.consumer import Stack, stack_of

pytestmark = pytest.mark.timeout(60)

T = 2000  # the snapshot's ts


def doc(ts: int) -> bytes:
    return b'{"order_id":"x","sync_version":%d}' % ts


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with stack_of(partitions=1) as s:
        await ensure_index(s.search, s.alias, retention_seconds=3600)
        yield s


async def reconcile_at(stack: Stack, ts: int) -> None:
    """Mark the snapshot at ``ts`` pending, let p0 be applied past it, run the Reconciler."""
    await stack.redis.hset(stack.keys.reconcile, str(ts), RECONCILE_PENDING)
    await stack.redis.set(stack.keys.applied(0), ts + 1)
    assert await Reconciler(stack.redis, stack.search, stack.keys, stack.alias, "me").run_due() == [
        ts
    ]


async def live(stack: Stack, key: bytes) -> int | None:
    found = await stack.search.get(index=stack.alias, id=key.decode(), ignore=404)
    return int(found["_version"]) if found.get("found") else None


async def test_a_stale_write_after_the_reconcile_is_refused_below_its_snapshot(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 2, raising=False)  # several pages
    sink = BulkSender(stack.search, stack.alias, 10.0)
    gone = [f"gone{n}".encode() for n in range(5)]  # deleted in the lost history
    await sink.send([Change(1000, key, doc(1000)) for key in gone])
    await sink.send([Change(T, b"snapshot", doc(T)), Change(2500, b"newer", doc(2500))])
    # not written by searchsync: its sync_version is below T, its version above
    await sink.send([Change(3000, b"odd", doc(1000)), Change(3000, b"odd2", doc(1000))])

    await reconcile_at(stack, T)
    assert [await live(stack, key) for key in gone] == [None] * 5
    assert await live(stack, b"snapshot") == T  # written at T itself: kept
    assert await live(stack, b"newer") == 2500
    assert [await live(stack, b"odd"), await live(stack, b"odd2")] == [3000, 3000]

    # the zombie's batch: its own version, and any other below T
    stale = [Change(ts, gone[0], doc(ts)) for ts in (1000, 1001, 1500, T - 1)]
    results = [(await sink.send([change]))[0] for change in stale]
    assert [r.error_type for r in results] == ["version_conflict_engine_exception"] * 4
    assert {classify(r) for r in results} == {Outcome.APPLIED}  # acknowledged, not retried
    assert await live(stack, gone[0]) is None

    # re-running it (a lock that expired under a dead consumer) changes nothing
    await reconcile_at(stack, T)
    assert await stack.redis.hget(stack.keys.reconcile, str(T)) == RECONCILE_DONE
    assert await live(stack, b"snapshot") == T
    assert await live(stack, b"newer") == 2500
    assert (await sink.send([Change(1500, gone[1], doc(1500))]))[0].status == 409


async def test_the_reconcile_deletes_below_its_snapshot_in_every_index_behind_the_alias(
    stack: Stack,
) -> None:
    # a second index behind the alias, not the write index (a bulk to the alias would
    # route a delete to the write index only, and the search would find it again)
    other = f"{stack.alias}_v2"
    body = index_body(retention_seconds=3600) | {
        "aliases": {stack.alias: {"is_write_index": False}}
    }
    await stack.search.indices.create(index=other, body=body)
    await stack.search.index(
        index=other,
        id="elsewhere",
        body=doc(1000),
        params={"version": 1000, "version_type": "external"},
    )
    await BulkSender(stack.search, stack.alias, 10.0).send([Change(1000, b"here", doc(1000))])
    await reconcile_at(stack, T)
    await stack.search.indices.refresh(index=stack.alias)
    found = await stack.search.search(index=stack.alias, body={"query": {"match_all": {}}})
    assert found["hits"]["hits"] == []
