"""Large documents through the whole pipeline: 5 MB is indexed, 120 MB is dead-lettered.

OpenSearch refuses requests above ``http.max_content_length`` (100 MB by default),
and a document that large would also sit in Redis twice (stream and dlq). The
producer dead-letters a document above MAX_DOCUMENT_BYTES (10 MiB by default)
with its key, ts and size, and everything else goes on; before, the 120 MB
document went into the stream and to the consumer, whose bulk OpenSearch
refused, and the dlq ended up holding all 120 MB of it.

Services and processes as in tests/e2e/test_pipeline.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.common.entries import decode_dead_letter
from tests.support.mzemu import seed_orders
from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import Entries, wait_for, xrange_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 1024 * 1024


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=3, partitions=2) as pipe:
        # The devstack's indexes cover object_value, and a btree entry holds at most
        # ~2.7 KB: this private schema keeps only the subject index, so a value can be
        # megabytes.
        with pipe.stack.pg() as pg:
            pg.execute("DROP INDEX triples_predicate_object_idx, triples_subject_predicate_idx")
            pg.execute("CREATE INDEX triples_subject_idx ON triples (subject_id, predicate)")
        yield pipe


def order_with_address(pipeline: Pipeline, number: int, address_bytes: int) -> None:
    """Order FM-<number> placed by its own customer, whose address is that long."""
    customer = f"customer:C-{number}"
    with pipeline.stack.pg() as pg, pg.transaction():
        seed_orders(pg, 1, first=number)
        pg.execute(
            "UPDATE triples SET object_value = %s "
            "WHERE subject_id = %s AND predicate = 'placed_by'",
            (customer, f"order:FM-{number}"),
        )
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
            "(%s, 'customer_name', 'Big', 'string'), (%s, 'customer_address', %s, 'string')",
            (customer, customer, "a" * address_bytes),
        )


def test_5_mb_is_indexed_and_120_mb_is_dead_lettered_by_the_producer(pipeline: Pipeline) -> None:
    pipeline.stack.producer(**pipeline.env())
    pipeline.consumer("c1")
    pipeline.wait_synced()
    order_with_address(pipeline, 3001, 5 * MB)
    order_with_address(pipeline, 3002, 120 * MB)
    with pipeline.stack.pg() as pg:
        seed_orders(pg, 1, first=3003)
    search = pipeline.search
    dlq = pipeline.stack.keys.dlq

    def arrived() -> bool:  # the emulator takes a while over 120 MB of one row
        search.indices.refresh(index=pipeline.alias)
        indexed = search.exists(index=pipeline.alias, id="order:FM-3003")
        return bool(indexed and pipeline.stack.sync_redis().xlen(dlq))

    try:
        wait_for(arrived, 180, "the small order indexed and a dead letter", interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pipeline.logs()}") from None
    pipeline.wait_synced(timeout=180)
    five = search.get(index=pipeline.alias, id="order:FM-3001")["_source"]
    assert len(five["customer_address"]) == 5 * MB
    assert search.exists(index=pipeline.alias, id="order:FM-3003")
    assert not search.exists(index=pipeline.alias, id="order:FM-3002")
    raw: Any = pipeline.stack.sync_redis().xrange(pipeline.stack.keys.dlq)
    letters = [decode_dead_letter(fields) for _, fields in raw]
    # a letter may be written twice (a replay after a reconnect), never zero times
    assert {(letter.key, letter.source) for letter in letters} == {
        (b"order:FM-3002", "producer")
    }, pipeline.logs()
    assert "more than MAX_DOCUMENT_BYTES=10485760" in letters[0].reason
    assert letters[0].doc is None  # its 120 MB are not copied into Redis
    # nothing that large ever went into a stream either
    assert max(len(fields.get(b"doc", b"")) for _, fields in _entries(pipeline)) < 6 * MB

    # A restart resumes with a snapshot that holds the 120 MB row, larger than the
    # emulator's 128 MiB SUBSCRIBE budget counts for it: it must still get through
    # (it was retired at every attempt, and nothing after it was ever synced).
    pipeline.stack.producers[-1].kill()
    pipeline.stack.producer(**pipeline.env())
    with pipeline.stack.pg() as pg:
        seed_orders(pg, 1, first=3004)
    try:
        wait_for(
            lambda: search.exists(index=pipeline.alias, id="order:FM-3004"),
            120,
            "an order written after the restart indexed",
            interval=1,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pipeline.logs()}") from None


def _entries(pipeline: Pipeline) -> Entries:
    client = pipeline.stack.sync_redis()
    return [
        entry for stream in pipeline.stack.keys.streams() for entry in xrange_all(client, stream)
    ]
