"""The consumer against real Redis and the devstack's real OpenSearch 2.19 node.

Entries are written straight into the partition streams with the producer's codec
(common.entries), so the consumer is tested alone; a consumer (consumer.worker.Worker) runs
in the test's event loop. Each test has its own view name and index alias and
deletes them afterwards (tests/support/consumer.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
import pytest

from searchsync.common.entries import decode_dead_letter, encode_changes
from tests.support.consumer import Stack, running_worker, stack_fixture, wait_for

pytestmark = pytest.mark.timeout(120)


stack = stack_fixture(partitions=4)


def order(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": f"order:FM-{n}",
        "order_number": f"FM-{n}",
        "order_status": "PLACED",
        "order_total_amount": 10.5 + n,
        "customer_name": "Ada Lovelace",
        "effective_updated_at": "2026-01-01T10:00:00+00:00",
        **extra,
    }


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_upserts_and_deletes_end_in_the_index(stack: Stack) -> None:
    t = now_ms()
    await stack.write(t, [(f"order:FM-{n}", order(n)) for n in range(40)])
    await stack.write(
        t + 1, [(f"order:FM-{n}", order(n, order_status="DELIVERED")) for n in range(10)]
    )
    await stack.write(t + 2, [(f"order:FM-{n}", None) for n in range(30, 40)], batch=False)
    await stack.progress(t + 3)
    async with running_worker(stack.settings()) as worker:
        await wait_for(lambda: settled(stack), 30, "all entries acknowledged")
        await wait_for(
            lambda: _frontiers_at_least(stack, t + 3), 10, "applied frontier on every partition"
        )
        # latency is observed per change (60), and once per progress entry (one per partition)
        expected = 60 + stack.partitions
        with contextlib.suppress(AssertionError):  # timed out: the assert below says by how much
            await wait_for(lambda: _latencies_at_least(worker, expected), 5, "observations")
        assert _latencies(worker) == expected
    docs = await stack.documents()
    assert sorted(docs) == sorted(f"order:FM-{n}" for n in range(30))
    assert {docs[f"order:FM-{n}"]["order_status"] for n in range(10)} == {"DELIVERED"}
    assert {docs[f"order:FM-{n}"]["order_status"] for n in range(10, 30)} == {"PLACED"}
    assert docs["order:FM-3"]["_version"] == t + 1 == docs["order:FM-3"]["sync_version"]
    written, acked = await stack.counts()
    assert written == acked == 60
    assert await stack.dead_letters() == []


def _latencies(worker: Any) -> float:
    registry = worker.metrics.registry
    return float(registry.get_sample_value("opensearch_sync_latency_seconds_count") or 0)


async def _latencies_at_least(worker: Any, count: int) -> bool:
    return _latencies(worker) >= count


async def _frontiers_at_least(stack: Stack, ts: int) -> bool:
    applied = await stack.applied()
    return len(applied) == stack.partitions and min(applied.values()) >= ts


async def test_out_of_order_and_replayed_entries_keep_the_newest(stack: Stack) -> None:
    t = now_ms()
    key = "order:FM-7"
    # the newest change first in the stream, older ones behind it (a replay, a reorder)
    await stack.write(t + 50, [(key, order(7, order_status="DELIVERED"))])
    await stack.write(t + 10, [(key, order(7, order_status="PLACED"))])
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "first entries acknowledged")
        # a replay of an old change after the newest one was applied
        await stack.write(t + 20, [(key, order(7, order_status="PICKING"))])
        await stack.write(t + 50, [(key, order(7, order_status="DELIVERED"))])  # same version
        await wait_for(lambda: settled(stack), 30, "replayed entries acknowledged")
    docs = await stack.documents()
    assert docs[key]["order_status"] == "DELIVERED"
    assert docs[key]["_version"] == t + 50
    assert await stack.dead_letters() == []


async def test_delete_then_recreate_and_no_resurrection_by_replay(stack: Stack) -> None:
    t = now_ms()
    await stack.write(t, [("order:FM-1", order(1)), ("order:FM-2", order(2))])
    await stack.write(t + 10, [("order:FM-1", None), ("order:FM-2", None)])
    await stack.write(t + 20, [("order:FM-1", order(1, order_status="REOPENED"))])
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
        # an old upsert of the deleted key replayed later: the tombstone (gc_deletes) wins
        await stack.write(t, [("order:FM-2", order(2))])
        await wait_for(lambda: settled(stack), 30, "replay acknowledged")
    docs = await stack.documents()
    assert sorted(docs) == ["order:FM-1"]
    assert docs["order:FM-1"]["order_status"] == "REOPENED"


async def test_rejected_document_is_dead_lettered_and_the_rest_sync(stack: Stack) -> None:
    t = now_ms()
    bad = order(5, order_total_amount="not a number")
    await stack.write(t, [("order:FM-5", bad)], batch=False)
    await stack.write(t + 1, [(f"order:FM-{n}", order(n)) for n in range(10, 20)])
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
    docs = await stack.documents()
    assert sorted(docs) == sorted(f"order:FM-{n}" for n in range(10, 20))
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"order:FM-5" and letter.ts == t
    assert letter.reason.startswith("400 mapper_parsing_exception")
    assert b"not a number" in (letter.doc or b"")
    assert letter.source.startswith("p")
    assert await stack.pending() == 0


async def test_request_rejected_as_a_whole_is_split_to_find_the_culprit(stack: Stack) -> None:
    # version -1 fails validation of the whole _bulk request (400, no item results)
    t = now_ms()
    await stack.write(-1, [("order:FM-99", order(99))], batch=False)
    await stack.write(t, [(f"order:FM-{n}", order(n)) for n in range(8)], batch=False)
    async with running_worker(stack.settings(MAX_BATCH_SIZE=50)):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
    docs = await stack.documents()
    assert sorted(docs) == sorted(f"order:FM-{n}" for n in range(8))
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"order:FM-99"
    assert "request rejected" in letter.reason and "illegal version value" in letter.reason


async def test_malformed_entry_is_dead_lettered(stack: Stack) -> None:
    await stack.raw_entry(0, {b"ts": b"12", b"op": b"u", b"key": b"order:FM-1"})  # no doc
    await stack.raw_entry(1, {b"ts": b"x", b"op": b"d", b"key": b"order:FM-2"})
    t = now_ms()
    await stack.write(t, [("order:FM-3", order(3))])
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
    letters = [decode_dead_letter(f) for f in await stack.dead_letters()]
    assert sorted(letter.key for letter in letters) == [b"order:FM-1", b"order:FM-2"]
    assert all(letter.reason.startswith("malformed entry") for letter in letters)
    assert sorted(await stack.documents()) == ["order:FM-3"]


async def test_poison_entry_is_dead_lettered_after_max_deliveries(stack: Stack) -> None:
    t = now_ms()
    await stack.write(t, [("order:FM-1", order(1))])
    from searchsync.common.streams import ensure_groups

    await ensure_groups(stack.redis, stack.keys, "searchsync")
    partition = _partition(stack, "order:FM-1")
    stream = stack.keys.stream(partition)
    # three consumers took it, sent it and crashed before the answer (each left the
    # attempt it opened before the bulk, consumer.attempts)
    reply: Any = await stack.redis.xreadgroup("searchsync", "crashed-0", {stream: ">"}, count=1)
    entry_id = reply[0][1][0][0]
    await stack.redis.hset(stack.keys.attempts(partition), entry_id, 3)
    await stack.write(t + 1, [("order:FM-2", order(2))])
    async with running_worker(stack.settings(MAX_DELIVERIES=3)):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"order:FM-1" and letter.deliveries == 3
    assert "attempted 3 times without an outcome (MAX_DELIVERIES=3)" in letter.reason
    assert await stack.redis.hlen(stack.keys.attempts(partition)) == 0
    assert sorted(await stack.documents()) == ["order:FM-2"]


async def test_reconcile_deletes_what_the_snapshot_did_not_contain(stack: Stack) -> None:
    t = now_ms()
    await stack.write(t, [(f"order:FM-{n}", order(n)) for n in range(6)])
    await stack.progress(t + 1)
    snapshot = t + 100
    # history lost: a snapshot at T holds orders 0-3 only; 4 and 5 were deleted meanwhile
    await stack.write(
        snapshot, [(f"order:FM-{n}", order(n, order_status="SNAP")) for n in range(4)]
    )
    await stack.reconcile_marker(snapshot)
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "snapshot acknowledged")
        assert await stack.redis.hget(stack.keys.reconcile, str(snapshot)) == b"pending"
        await stack.progress(snapshot + 1)  # now every partition is applied beyond T
        await wait_for(lambda: _reconcile_done(stack, snapshot), 30, "reconcile marked done")
    docs = await stack.documents()
    assert sorted(docs) == [f"order:FM-{n}" for n in range(4)]
    assert {doc["order_status"] for doc in docs.values()} == {"SNAP"}


async def _reconcile_done(stack: Stack, ts: int) -> bool:
    return bool(await stack.redis.hget(stack.keys.reconcile, str(ts)) == b"done")


async def test_a_fenced_off_consumer_stops_writing_the_partition(stack: Stack) -> None:
    t = now_ms()
    async with running_worker(stack.settings()) as worker:
        await wait_for(lambda: _owns_all(worker, stack), 10, "the consumer owning every partition")
        # someone else holds p0 now (as after an expiry and a takeover)
        await stack.redis.set(stack.keys.lease(0), "intruder", px=60_000)
        keys0 = [k for k in (f"order:FM-{n}" for n in range(200)) if _partition(stack, k) == 0]
        await stack.write(t, [(k, order(0)) for k in keys0[:5]])
        await wait_for(lambda: _not_owning(worker, 0), 10, "the consumer letting go of p0")
        assert await stack.outstanding() == 1  # the entry waits for the lease holder
        assert await stack.documents() == {}
        await stack.redis.delete(stack.keys.lease(0))
        await wait_for(lambda: settled(stack), 30, "p0 synced after the lease came back")
    assert sorted(await stack.documents()) == sorted(keys0[:5])


def _partition(stack: Stack, key: str) -> int:
    from searchsync.common.partition import partition_of

    return partition_of(key.encode(), stack.partitions)


async def _owns_all(worker: Any, stack: Stack) -> bool:
    return len(worker.runners) == stack.partitions


async def _not_owning(worker: Any, partition: int) -> bool:
    return partition not in worker.runners


async def test_index_bootstrap_is_idempotent(stack: Stack) -> None:
    from searchsync.common.index import ensure_index

    first = await ensure_index(stack.search, stack.alias, retention_seconds=7200)
    second = await ensure_index(stack.search, stack.alias, retention_seconds=7200)
    assert first == second == f"{stack.alias}_v1"
    aliases = await stack.search.indices.get_alias(name=stack.alias)
    assert list(aliases) == [first]
    settings = await stack.search.indices.get_settings(index=first)
    index = settings[first]["settings"]["index"]
    assert index["gc_deletes"] == "7200s" and index["refresh_interval"] == "1s"
    mapping = await stack.search.indices.get_mapping(index=first)
    properties = mapping[first]["mappings"]["properties"]
    assert properties["sync_version"] == {"type": "long"}
    assert properties["customer_name"]["fields"]["keyword"]["type"] == "keyword"
    assert len(properties) == 19


async def test_large_entries_are_sent_in_bulks_of_at_most_max_batch_size(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MAX_BATCH_SIZE counts changes; a `b` entry holds many. The spy only counts what
    # the real sender posts to the real OpenSearch.
    from searchsync.consumer.sender import BulkSender

    sizes: list[int] = []
    real_send = BulkSender.send

    async def counting_send(self: BulkSender, changes: Any) -> Any:
        sizes.append(len(changes))
        return await real_send(self, changes)

    monkeypatch.setattr(BulkSender, "send", counting_send)
    t = now_ms()
    for round_ in range(5):  # 5 rounds of one entry per partition, ~75 changes each
        await stack.write(t + round_, [(f"order:FM-{n}", order(n)) for n in range(300)])
    await stack.progress(t + 5)
    async with running_worker(stack.settings(MAX_BATCH_SIZE=50)):
        await wait_for(lambda: settled(stack), 30, "all entries acknowledged")
    assert sizes and max(sizes) <= 50, sizes
    docs = await stack.documents()
    assert len(docs) == 300
    assert {doc["_version"] for doc in docs.values()} == {t + 4}


async def test_bulks_are_capped_in_bytes_as_well(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~2 KB documents, 200 to a bulk by count: ~400 KB; MAX_BULK_BYTES=64 KiB caps them
    from searchsync.consumer.bulk import encode_body
    from searchsync.consumer.sender import BulkSender

    sizes: list[tuple[int, int]] = []
    real_send = BulkSender.send

    async def measuring_send(self: BulkSender, changes: Any) -> Any:
        sizes.append((len(changes), len(encode_body(changes))))
        return await real_send(self, changes)

    monkeypatch.setattr(BulkSender, "send", measuring_send)
    t = now_ms()
    padding = "x" * 2000
    await stack.write(t, [(f"order:FM-{n}", order(n, store_address=padding)) for n in range(300)])
    await stack.progress(t + 1)
    async with running_worker(stack.settings(MAX_BATCH_SIZE=200, MAX_BULK_BYTES=65536)):
        await wait_for(lambda: settled(stack), 30, "all entries acknowledged")
    assert sizes and max(size for _, size in sizes) <= 65536, sizes
    assert len(await stack.documents()) == 300


@pytest.mark.parametrize("producer_mark", [True, False])
async def test_a_progress_entry_with_an_absurd_ts_never_reaches_the_frontier(
    stack: Stack, producer_mark: bool
) -> None:
    t = now_ms()
    if producer_mark:  # what the producer announces before it writes (producer.writer)
        await stack.redis.zadd(stack.keys.high_water, {"ts": t + 2})
    await stack.write(t, [("order:FM-1", order(1))])
    await stack.progress(t + 1)
    garbage = 99_999_999_999_999  # someone XADDs by hand
    await stack.raw_entry(
        _partition(stack, "order:FM-1"), {b"ts": str(garbage).encode(), b"op": b"p"}
    )
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "entries acknowledged")
    applied = await stack.applied()
    assert applied and max(applied.values()) <= t + 2, applied
    (fields,) = await stack.dead_letters()
    letter = decode_dead_letter(fields)
    assert letter.op == b"p" and letter.ts == garbage
    assert "not written by the producer" in letter.reason


async def test_a_bad_field_costs_only_its_change_not_its_entry(stack: Stack) -> None:
    t = now_ms()
    fields = encode_changes(
        t, [(f"order:FM-{n}".encode(), msgspec.json.encode(order(n))) for n in range(1, 6)]
    )
    fields[b"u:"] = b'{"order_id": ""}'  # a change whose key the codec cannot carry
    fields[b"n"] = b"6"
    await stack.raw_entry(0, fields)
    await stack.redis.hincrby(stack.keys.counts(0), stack.keys.written_field(0), 6)
    async with running_worker(stack.settings()):
        await wait_for(lambda: settled(stack), 30, "the entry acknowledged")
    assert sorted(await stack.documents()) == [f"order:FM-{n}" for n in range(1, 6)]
    (letter_fields,) = await stack.dead_letters()
    letter = decode_dead_letter(letter_fields)
    assert letter.key == b"" and letter.doc == b'{"order_id": ""}' and letter.ts == t
    assert letter.reason.startswith("malformed change")
    assert await stack.counts() == (6, 6)


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each batch held when the real runner sent it (its changes)."""
    from searchsync.consumer.batch import Batch
    from searchsync.consumer.runner import PartitionRunner

    held: list[int] = []
    real_process = PartitionRunner._process

    async def recording_process(self: PartitionRunner, batch: Batch) -> None:
        held.append(batch.changes)
        await real_process(self, batch)

    monkeypatch.setattr(PartitionRunner, "_process", recording_process)
    return held


ORDERS = [f"order:FM-{n}" for n in range(300)]


def largest_entry(partitions: int) -> int:
    from searchsync.common.partition import partition_of

    return max(
        sum(1 for key in ORDERS if partition_of(key.encode(), partitions) == p)
        for p in range(partitions)
    )


async def test_a_backlog_of_full_entries_is_read_a_batch_at_a_time(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # XREADGROUP counts entries, MAX_BATCH_SIZE changes: a runner's first read sized as
    # if each entry held one change took a whole backlog into memory at once (the
    # consumers bench's drain of 200,000 changes in entries of ~125: 255 MB a consumer)
    held = record_batches(monkeypatch)
    t = now_ms()
    for round_ in range(20):  # 20 entries a partition, ~75 changes each
        await stack.write(t + round_, [(key, order(n)) for n, key in enumerate(ORDERS)])
    await stack.progress(t + 20)
    async with running_worker(stack.settings(MAX_BATCH_SIZE=100)):
        await wait_for(lambda: settled(stack), 60, "all entries acknowledged")
    assert held and max(held) <= 100 + largest_entry(4), held
    assert len(await stack.documents()) == 300


async def test_a_replay_onto_full_entries_after_small_ones_is_read_a_batch_at_a_time(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a running consumer that last read one-change entries (quiet traffic) sized its
    # next read by them; `searchsync replay` then moved the group back onto full ones
    from searchsync.consumer.replay import apply_plan, parse_since, plan_partition
    from tests.support.consumer import GROUP

    held = record_batches(monkeypatch)
    t = now_ms()
    for round_ in range(20):
        await stack.write(t + round_, [(key, order(n)) for n, key in enumerate(ORDERS)])
    async with running_worker(stack.settings(MAX_BATCH_SIZE=100)):
        await wait_for(lambda: settled(stack), 60, "the full entries acknowledged")
        for n in range(40):  # one change an entry, read as they come
            await stack.write(t + 100 + n, [(ORDERS[n], order(n, order_status="SHIPPED"))])
        await wait_for(lambda: settled(stack), 60, "the small entries acknowledged")
        held.clear()
        for partition in range(4):
            plan = await plan_partition(
                stack.redis, stack.keys, GROUP, partition, parse_since(str(t))
            )
            await apply_plan(stack.redis, stack.keys, GROUP, plan)
        await wait_for(lambda: settled(stack), 60, "the replay acknowledged")
    assert sum(held) >= 20 * 300, held  # the replay was read
    assert max(held) <= 100 + largest_entry(4), held
