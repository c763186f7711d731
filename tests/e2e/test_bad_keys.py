"""A key the stream codec or OpenSearch cannot carry costs only its own change.

An order whose key (``order_id``) is empty, or longer than OpenSearch's 512-byte
``_id``, arrives at the same timestamp as ten good orders, so their changes share
``b`` entries. The producer must dead-letter the bad keys alone, each with its
document, and every good order must reach the index. Before, the empty key passed
the producer and the consumer's codec rejected the whole entry holding it: every
order of that partition and timestamp went to the dlq in one useless letter.

Services and processes as in tests/e2e/test_pipeline.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.common.entries import decode_dead_letter
from tests.support.mzemu import seed_orders
from tests.support.pipeline import Pipeline, pipeline_of

pytestmark = pytest.mark.timeout(240)

LONG_KEY = "order:" + "x" * 600


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=3, partitions=2) as pipe:
        yield pipe


def test_bad_keys_are_dead_lettered_alone_at_the_producer(pipeline: Pipeline) -> None:
    pipeline.stack.producer(**pipeline.env())
    pipeline.consumer("c1")
    pipeline.wait_synced()
    with pipeline.stack.pg() as pg, pg.transaction():  # one timestamp for all of them
        seed_orders(pg, 10, first=2001)
        for key, number in (("", "FM-EMPTY"), (LONG_KEY, "FM-LONG")):
            pg.execute(
                "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
                "VALUES (%s, 'order_number', %s, 'string')",
                (key, number),
            )
    time.sleep(1)
    pipeline.wait_synced()
    pipeline.search.indices.refresh(index=pipeline.alias)
    good = [f"order:FM-{n}" for n in range(2001, 2011)]
    found = pipeline.search.mget(index=pipeline.alias, body={"ids": good})["docs"]
    missing = [doc["_id"] for doc in found if not doc["found"]]
    raw: Any = pipeline.stack.sync_redis().xrange(pipeline.stack.keys.dlq)
    letters = [decode_dead_letter(fields) for _, fields in raw]
    assert missing == [], f"good orders lost with a bad key's entry: {missing}; dlq: {letters}"
    assert sorted(letter.key for letter in letters) == [b"", LONG_KEY.encode()]
    assert all(letter.source == "producer" for letter in letters)
    by_key = {letter.key: letter for letter in letters}
    assert "is empty" in by_key[b""].reason
    assert "is 606 bytes, OpenSearch ids are at most 512" in by_key[LONG_KEY.encode()].reason
    # each keeps its document, so it can be retried once the key is fixed
    assert json.loads(by_key[b""].doc or b"{}")["order_number"] == "FM-EMPTY"
    assert json.loads(by_key[LONG_KEY.encode()].doc or b"{}")["order_number"] == "FM-LONG"
