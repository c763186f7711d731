"""The whole pipeline, end to end, with real processes killed under load.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process over it, a private redis-server, the shared OpenSearch node (a
private index alias). Processes: ``producer.main``, ``consumer.main``, the
FreshMart load generator and the ``searchsync`` CLI — all real subprocesses.

The oracle is ``searchsync verify``: every row of the view (read through the
emulator) must equal its document in OpenSearch, and no other document may exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import OpenSearch

from tests.support.consumer import ConsumerProcess, service_env
from tests.support.producer import REPO, Stack, start_load, wait_for

pytestmark = pytest.mark.timeout(240)

CLI = REPO / ".venv" / "bin" / "searchsync"


class Pipeline:
    """A Stack (schema, emulator, Redis, producers) plus consumers and an index."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.alias = f"test_e2e_{uuid.uuid4().hex[:10]}"
        services = service_env()
        self.os_env = {"OS_HOST": services["OS_HOST"], "OS_PORT": services["OS_PORT"]}
        self.consumers: dict[str, ConsumerProcess] = {}
        self.search = OpenSearch(
            hosts=[{"host": services["OS_HOST"], "port": int(services["OS_PORT"])}]
        )

    def env(self, **overrides: str) -> dict[str, str]:
        return self.stack.env(
            **self.os_env,
            OS_INDEX_NAME=self.alias,
            LEASE_TTL_SECONDS="2",
            MAX_BATCH_AGE_SECONDS="0.5",
            RETRY_INITIAL_BACKOFF="0.2",
            **overrides,
        )

    def consumer(self, name: str) -> ConsumerProcess:
        process = ConsumerProcess(self.env(), name, self.stack.log_dir)
        self.consumers[name] = process
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def verify(self, settle: float = 30) -> dict[str, Any]:
        result = self.cli("verify", "--json", "--settle", str(settle))
        assert result.returncode in (0, 1), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def wait_synced(self, timeout: float = 90) -> dict[str, Any]:
        """Until the producer's checkpoint is applied everywhere and nothing is buffered."""

        def synced() -> dict[str, Any] | None:
            status = self.status()
            frontier = status["checkpoint"]
            applied = [p["applied_ts"] or 0 for p in status["partitions"]]
            done = frontier is not None and status["buffer"] == 0 and min(applied) >= frontier
            return status if done else None

        status: dict[str, Any] = wait_for(
            synced, timeout, "the pipeline to apply everything", interval=0.5
        )
        return status

    def logs(self) -> str:
        parts = [f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.stack.producers]
        parts += [f"--- {c.name}\n{c.log()[-3000:]}" for c in self.consumers.values()]
        return "\n".join(parts)

    def close(self) -> None:
        for process in self.consumers.values():
            process.ensure_dead()
        self.search.indices.delete(index=f"{self.alias}_v*", ignore=[404])
        self.search.close()


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    stack = Stack(orders=300, partitions=4, realistic=True)
    pipe = Pipeline(stack)
    try:
        yield pipe
    finally:
        pipe.close()
        stack.close()


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
    status = pipeline.status()
    assert status["dlq_length"] == 0
    assert sorted(status["members"]) == ["c2", "c3"]
    assert {p["owner"] for p in status["partitions"]} <= {"c2", "c3"}
    assert all(p["pending"] == 0 for p in status["partitions"])


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
