"""producer/writer.py and producer/backpressure.py against the shared Redis.

Needs: the devstack Redis (REDIS_URL from the environment or .devstack/env).
Keys live under a random view name and are deleted afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from searchsync.common.entries import Change, DeadLetter, Marker, decode_dead_letter
from searchsync.common.keys import Keys
from searchsync.common.partition import partition_of
from searchsync.common.streams import ensure_groups
from searchsync.producer.backpressure import BufferMonitor, read_buffer
from searchsync.producer.batches import build_entries
from searchsync.producer.lease import ProducerFenced, ProducerLease
from searchsync.producer.writer import StreamWriter
from tests.support.producer import (
    Entries,
    all_changes,
    delete_view_keys,
    devstack_env,
    unique_view,
)

PARTITIONS = 4


@pytest.fixture
async def redis_client() -> AsyncIterator[tuple[Redis, Keys]]:
    client = Redis.from_url(devstack_env()["REDIS_URL"])
    view = unique_view()
    try:
        yield client, Keys(view, PARTITIONS)
    finally:
        await delete_view_keys(client, view)
        await client.aclose()


def docs(ts: int, n: int, start: int = 0) -> list[tuple[int, bytes, bytes | None]]:
    return [(ts, f"o{i}".encode(), b'{"order_id":"o%d"}' % i) for i in range(start, start + n)]


async def test_entries_counts_and_checkpoint(redis_client: tuple[Redis, Keys]) -> None:
    client, keys = redis_client
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    assert await writer.read_checkpoint() is None
    changes = [*docs(10, 600), (11, b"o5", None)]
    entries = build_entries(changes, PARTITIONS, 256)
    await writer.write(entries, high_water=11)
    assert await client.zscore(keys.high_water, "ts") == 11
    await writer.commit(12)
    assert await client.zscore(keys.high_water, "ts") == 12  # progress entries at 12
    stored, markers = await all_changes(client, keys)
    assert sorted(stored, key=lambda c: (c.ts, c.key)) == sorted(
        (Change(ts, k, d) for ts, k, d in changes), key=lambda c: (c.ts, c.key)
    )
    assert markers == [Marker(b"p", 12)] * PARTITIONS  # first progress is always due
    counts = [await client.hgetall(keys.counts(n)) for n in range(PARTITIONS)]
    assert sum(int(v) for hash_ in counts for v in hash_.values()) == 601
    assert await writer.read_checkpoint() == 12
    await writer.commit(13)  # within PROGRESS_INTERVAL_MS: checkpoint only
    _, markers = await all_changes(client, keys)
    assert len(markers) == PARTITIONS
    assert await writer.read_checkpoint() == 13


async def test_refused_write_raises_and_leaves_checkpoint(redis_client: tuple[Redis, Keys]) -> None:
    client, keys = redis_client
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    await writer.write(build_entries(docs(10, 1), PARTITIONS), high_water=10)
    await writer.commit(11)
    entries = build_entries(docs(12, 50), PARTITIONS)
    await client.set(keys.stream(entries[0].partition), "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await writer.write(entries, high_water=12)
    assert await writer.read_checkpoint() == 11
    # the connection is still usable afterwards (every reply was read)
    assert await client.ping()


async def test_reconcile_marker_and_pending_hash(redis_client: tuple[Redis, Keys]) -> None:
    client, keys = redis_client
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    await writer.write(build_entries(docs(20, 3), PARTITIONS), high_water=20)
    await writer.mark_reconcile(20)
    _, markers = await all_changes(client, keys)
    assert markers == [Marker(b"r", 20)] * PARTITIONS
    assert await client.hgetall(keys.reconcile) == {b"20": b"pending"}


async def test_no_reconcile_marker_is_written_without_its_pending_reconcile(
    redis_client: tuple[Redis, Keys],
) -> None:
    """A marker raises its partition's snapshot floor, below which consumers settle
    changes unsent: without reconcile[ts] = pending (the producer killed between the two
    writes; here Redis refuses the HSET) a document deleted below ts stays indexed
    (``python -m tests.sim --seed 196 --polling``). Failing first: the markers went in
    before the HSET."""
    client, keys = redis_client
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    await writer.write(build_entries(docs(20, 3), PARTITIONS), high_water=20)
    await client.set(keys.reconcile, "not a hash")  # HSET refused: WRONGTYPE
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await writer.mark_reconcile(20)
    _, markers = await all_changes(client, keys)
    assert markers == [], "a marker was written without its pending reconcile"


async def test_a_producer_that_lost_its_lease_marks_no_reconcile(
    redis_client: tuple[Redis, Keys],
) -> None:
    """A producer paused past its lease that wrote a snapshot behind its successor's back
    must not start that snapshot's reconcile: its rows may land after the successor's
    progress entries, and the reconcile would delete live documents until they do
    (``python -m tests.sim --seed 2517`` once the commit was fenced). Failing first: the
    HSET and the markers went in."""
    client, keys = redis_client
    ours = ProducerLease(client, keys, "a", ttl_seconds=5)
    assert await ours.try_acquire()
    writer = StreamWriter(client, keys, progress_interval_ms=1000, lease=lambda: ours.value)
    await writer.write(build_entries(docs(20, 3), PARTITIONS), high_water=20)
    await client.delete(keys.producer_lease)
    assert await ProducerLease(client, keys, "b", ttl_seconds=5).try_acquire()
    with pytest.raises(ProducerFenced):
        await writer.mark_reconcile(20)
    ours.value = ""  # what ProducerLease.keep sets once it noticed the loss
    with pytest.raises(ProducerFenced):
        await writer.mark_reconcile(20)
    _, markers = await all_changes(client, keys)
    assert markers == []
    assert await client.hgetall(keys.reconcile) == {}


async def test_dead_letters_go_to_the_dlq(redis_client: tuple[Redis, Keys]) -> None:
    client, keys = redis_client
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    letter = DeadLetter(
        ts=5, op=b"u", key=b"o1", reason="key violation", source="producer", doc=b"[{},{}]"
    )
    await writer.write([], [letter])
    [(_, fields)] = cast(Entries, await client.xrange(keys.dlq))
    assert decode_dead_letter(fields) == letter


async def test_the_checkpoint_only_moves_up_and_only_for_the_lease_holder(
    redis_client: tuple[Redis, Keys],
) -> None:
    client, keys = redis_client
    ours = ProducerLease(client, keys, "a", ttl_seconds=5)
    assert await ours.try_acquire()
    writer = StreamWriter(client, keys, progress_interval_ms=1000, lease=lambda: ours.value)
    await writer.commit(100)
    await writer.commit(90)  # a replayed, older frontier: never moves it back
    assert await writer.read_checkpoint() == 100
    # another producer took the lease over (ours expired while we were paused)
    await client.delete(keys.producer_lease)
    theirs = ProducerLease(client, keys, "b", ttl_seconds=5)
    assert await theirs.try_acquire()
    assert theirs.value.startswith("2:") and ours.value.startswith("1:")
    with pytest.raises(ProducerFenced):
        await writer.commit(200)
    assert await writer.read_checkpoint() == 100
    assert not await ours.try_acquire()  # held: the old holder waits as a standby


async def test_a_producer_that_lost_its_lease_writes_no_progress_above_the_mark(
    redis_client: tuple[Redis, Keys],
) -> None:
    """The successor reads the high-water mark H on taking the lease and declares its
    snapshot at or above it; a progress entry of the old holder above H landing before
    the snapshot's rows would move consumers' applied frontier past rows not yet
    indexed (``python -m tests.sim --seed 74465`` at ab6a5e1). Failing first: the old
    commit XADDed the progress entries (and raised the mark) before its fenced
    checkpoint script refused it."""
    client, keys = redis_client
    ours = ProducerLease(client, keys, "a", ttl_seconds=5)
    assert await ours.try_acquire()
    writer = StreamWriter(client, keys, progress_interval_ms=1, lease=lambda: ours.value)
    await writer.commit(100)
    streams: dict[Any, Any] = {keys.stream(p): "0-0" for p in range(PARTITIONS)}
    before = cast(list[tuple[bytes, Entries]], await client.xread(streams))
    assert sum(len(entries) for _, entries in before) == PARTITIONS  # progress at 100
    await client.delete(keys.producer_lease)  # ours expired while we were paused
    theirs = ProducerLease(client, keys, "b", ttl_seconds=5)
    assert await theirs.try_acquire()
    successor = StreamWriter(client, keys, progress_interval_ms=1, lease=lambda: theirs.value)
    assert await successor.read_high_water() == 100  # the successor's snapshot: >= 100

    with pytest.raises(ProducerFenced):
        await writer.commit(200)  # the paused producer wakes up with progress due
    after = cast(list[tuple[bytes, Entries]], await client.xread(streams))
    assert after == before, "a fenced producer wrote progress entries"
    assert await client.zscore(keys.high_water, "ts") == 100
    await successor.commit(150)  # the holder's commit raises the mark with its progress
    assert await client.zscore(keys.high_water, "ts") == 150


async def ack_partition(client: Redis, keys: Keys, partition: int) -> None:
    """What a consumer does: read, XACK, and count the changes into acked:p<N>."""
    stream = keys.stream(partition)
    read = cast(
        list[tuple[bytes, Entries]],
        await client.xreadgroup("g", "c1", {stream: ">"}, count=1000),
    )
    entries = [entry for _, batch in read for entry in batch]
    await client.xack(stream, "g", *[entry_id for entry_id, _ in entries])
    changes = sum(int(fields.get(b"n", b"1")) for _, fields in entries)
    await client.hincrby(keys.counts(partition), keys.acked_field(partition), changes)


async def test_buffer_counts_changes_until_acknowledged(
    redis_client: tuple[Redis, Keys], caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = redis_client
    await ensure_groups(client, keys, "g")
    writer = StreamWriter(client, keys, progress_interval_ms=1000)
    monitor = BufferMonitor(client, keys, group="g", threshold=1000, resume=400, log_seconds=60)
    assert await read_buffer(client, keys, "g") == 0
    await writer.write(build_entries(docs(30, 1200), PARTITIONS, 256), high_water=30)
    caplog.set_level(logging.INFO, logger="searchsync.producer.backpressure")
    assert await monitor.measure() == 1200
    assert monitor.active
    assert "Backpressure activated: pausing SUBSCRIBE stream" in caplog.text
    assert "Buffer overflow: 1200 events pending (backpressure activated)" in caplog.text
    # A consumer acknowledges everything in two partitions: the rest stays buffered.
    for partition in range(2):
        await ack_partition(client, keys, partition)
    remaining = sum(1 for _, key, _ in docs(30, 1200) if partition_of(key, PARTITIONS) >= 2)
    assert await monitor.measure() == remaining
    assert monitor.active == (remaining >= 400)  # between resume and threshold: still paused
    for partition in range(2, PARTITIONS):
        await ack_partition(client, keys, partition)
    assert await monitor.measure() == 0
    assert not monitor.active
    assert "Backpressure released: resuming SUBSCRIBE stream" in caplog.text


async def test_per_partition_buffers_and_dead_letters_reach_the_gauges(
    redis_client: tuple[Redis, Keys],
) -> None:
    """What the dashboard's lag-per-partition and dead-letter panels read."""
    from prometheus_client import CollectorRegistry

    from searchsync.producer.backpressure import read_buffers
    from searchsync.producer.metrics import ProducerMetrics

    client, keys = redis_client
    await ensure_groups(client, keys, "g")
    changes = docs(40, 300)
    await StreamWriter(client, keys, progress_interval_ms=1000).write(
        build_entries(changes, PARTITIONS, 256), high_water=40
    )
    await client.xadd(keys.dlq, {"reason": "test", "key": "o1"})
    await ack_partition(client, keys, 0)
    expected = [0] + [
        sum(1 for _, key, _ in changes if partition_of(key, PARTITIONS) == p)
        for p in range(1, PARTITIONS)
    ]
    reading = await read_buffers(client, keys, "g")
    assert list(reading.partitions) == expected and reading.dead_letters == 1
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry, keys.prefix)
    monitor = BufferMonitor(
        client, keys, group="g", threshold=1000, resume=400, log_seconds=60, metrics=metrics
    )
    assert await monitor.measure() == sum(expected)
    for partition, buffer in enumerate(expected):
        labels = {"view": keys.prefix, "partition": str(partition)}
        assert (
            registry.get_sample_value("searchsync_producer_partition_buffer_size", labels) == buffer
        )
    stored = registry.get_sample_value(
        "searchsync_producer_dead_letter_stream_length", {"view": keys.prefix}
    )
    assert stored == 1
