"""The whole pipeline, end to end, with real processes killed under load.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process over it, a private redis-server, the shared OpenSearch node (a
private index alias). Processes: ``producer.main``, ``consumer.main``, the
FreshMart load generator and the ``searchsync`` CLI — all real subprocesses.

The oracle is ``searchsync verify``: every row of the view (read through the
emulator) must equal its document in OpenSearch, and no other document may exist.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import start_load, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=300, partitions=4, realistic=True) as pipe:
        yield pipe


def test_view_and_index_agree_after_load_with_kill_9s(pipeline: Pipeline) -> None:
    producer = pipeline.stack.producer(**pipeline.env())
    first = pipeline.consumer("c1")
    pipeline.consumer("c2")
    pipeline.wait_synced()
    report = pipeline.verify(settle=5)
    assert report["ok"], (report, pipeline.logs())
    assert report["view_count"] == report["index_count"] >= 300

    load = start_load(pipeline.stack, rate=60, seconds=14)
    try:
        time.sleep(4)
        producer.kill()  # kill -9 mid-load: resumes from its checkpoint
        first.signal(signal.SIGKILL)  # and a consumer: its partitions move to c2, then c3
        time.sleep(1)
        pipeline.stack.producer(**pipeline.env())
        pipeline.consumer("c3")
        time.sleep(4)
        pipeline.stack.producers[-1].kill()
        pipeline.stack.producer(**pipeline.env())
    finally:
        _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err

    pipeline.wait_synced(timeout=120)
    report = pipeline.verify(settle=20)
    assert report["ok"], (report, pipeline.logs())
    assert report["view_count"] == report["index_count"]
    status = pipeline.wait_nothing_pending()  # nothing left stuck in a consumer's hands
    assert status["dlq_length"] == 0
    assert sorted(status["members"]) == ["c2", "c3"]
    assert {p["owner"] for p in status["partitions"]} <= {"c2", "c3"}


def test_deleted_while_producer_down_and_history_compacted_disappears(pipeline: Pipeline) -> None:
    """Restart after compaction: the reconcile snapshot removes what vanished meanwhile."""
    env = pipeline.env()
    producer = pipeline.stack.producer(**env)
    pipeline.consumer("c1")
    pipeline.wait_synced()
    assert producer.terminate() == 0

    victim = "order:FM-1001"
    assert pipeline.search.get(index=pipeline.alias, id=victim)["found"]
    with pipeline.stack.pg() as pg, pg.transaction():
        pg.execute(
            "DELETE FROM triples WHERE subject_id = %s OR subject_id IN (SELECT subject_id "
            "FROM triples WHERE object_value = %s AND predicate IN "
            "('line_of_order', 'task_of_order'))",
            (victim, victim),
        )
    # forget the history the checkpoint needs, as Materialize's 1 s compaction would
    time.sleep(0.2)
    pipeline.stack.emulator.admin("mzemu_compact()")

    restarted = pipeline.stack.producer(**env)
    restarted.wait_log("RETAIN HISTORY")
    pipeline.wait_synced()

    def reconciled() -> bool:
        states = pipeline.stack.sync_redis().hvals(pipeline.stack.keys.reconcile)
        return bool(states) and all(state == b"done" for state in states)

    wait_for(reconciled, 60, "the reconcile to run")
    pipeline.search.indices.refresh(index=pipeline.alias)
    assert not pipeline.search.exists(index=pipeline.alias, id=victim)
    report = pipeline.verify(settle=10)
    assert report["ok"], (report, pipeline.logs())
