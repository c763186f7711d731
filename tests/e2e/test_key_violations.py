"""A view that breaks its key across timestamps: an order with two delivery tasks.

``orders_search_source_mv`` has one row per order and task, so an order given a
second task has two live rows. The pipeline must follow the view: while both
live, the key is in violation (a dead letter holding the new row; the indexed
document stays as it was); when one task goes, the survivor is what is indexed.
Before the cross-timestamp state, the second row was upserted over the first, and
retracting it deleted the order from the index while its first row still lived.

Services and processes as in tests/e2e/test_pipeline.py: real PostgreSQL (a
private FreshMart schema), a private emulator and redis-server, the shared
OpenSearch node, real producer, consumer and CLI processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.common.entries import decode_dead_letter
from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import wait_for

pytestmark = pytest.mark.timeout(240)

ORDER = "order:FM-1001"
FIRST_TASK = "task:T-FM-1001"
SECOND_TASK = "task:T2-FM-1001"


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=5, partitions=2) as pipe:
        yield pipe


def add_task(pipeline: Pipeline, task: str, status: str) -> None:
    with pipeline.stack.pg() as pg, pg.transaction():
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
            "(%s, 'task_of_order', %s, 'entity_ref'), (%s, 'task_status', %s, 'string')",
            (task, ORDER, task, status),
        )


def delete_task(pipeline: Pipeline, task: str) -> None:
    with pipeline.stack.pg() as pg, pg.transaction():
        pg.execute("DELETE FROM triples WHERE subject_id = %s", (task,))


def indexed(pipeline: Pipeline) -> dict[str, Any] | None:
    pipeline.search.indices.refresh(index=pipeline.alias)
    found = pipeline.search.search(
        index=pipeline.alias, body={"query": {"ids": {"values": [ORDER]}}}
    )["hits"]["hits"]
    return found[0]["_source"] if found else None


def letters(pipeline: Pipeline) -> list[Any]:
    client = pipeline.stack.sync_redis()
    raw: Any = client.xrange(pipeline.stack.keys.dlq)
    return [decode_dead_letter(fields) for _, fields in raw]


def settled(pipeline: Pipeline, since: int) -> None:
    """Until the pipeline applied every change made before now (``since``: a wall ms)."""

    def caught_up() -> bool:
        status = pipeline.status()
        applied = [p["applied_ts"] or 0 for p in status["partitions"]]
        return min(applied) > since and status["buffer"] == 0

    wait_for(caught_up, 60, "the pipeline to apply the change", interval=0.3)


def test_an_order_with_two_tasks_follows_the_view(pipeline: Pipeline) -> None:
    pipeline.stack.producer(**pipeline.env())
    pipeline.consumer("c1")
    pipeline.wait_synced()
    before = indexed(pipeline)
    assert before is not None and before["delivery_task_status"] == "pending"

    add_task(pipeline, SECOND_TASK, "assigned")  # a second live row, at a later ts
    settled(pipeline, int(time.time() * 1000))
    assert indexed(pipeline) == before, "the indexed document changed during the violation"
    (letter,) = letters(pipeline)
    assert letter.key == ORDER.encode() and "key violation: 2 live rows" in letter.reason
    assert "1 of them live before the violation" in letter.reason
    rows = json.loads(letter.doc or b"[]")
    assert [r["delivery_task_status"] for r in rows] == ["assigned"]  # the new row

    delete_task(pipeline, SECOND_TASK)  # back to one row: the first, still indexed
    settled(pipeline, int(time.time() * 1000))
    after = indexed(pipeline)
    assert after is not None, "the order disappeared from search while its first row lives"
    assert after["delivery_task_status"] == "pending"

    add_task(pipeline, SECOND_TASK, "assigned")
    delete_task(pipeline, FIRST_TASK)  # the survivor is the second task's row
    settled(pipeline, int(time.time() * 1000))
    survivor = indexed(pipeline)
    assert survivor is not None and survivor["delivery_task_status"] == "assigned"
    report = pipeline.verify(settle=10)
    assert report["ok"], (report, pipeline.logs())
