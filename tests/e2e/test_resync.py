"""``searchsync resync`` end to end: a rebuild under live load, killed, resumed, aborted.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process over it, a private redis-server, the shared OpenSearch node (a
private index alias). Processes: ``producer.main``, ``consumer.main``, the FreshMart
load generator and the ``searchsync`` CLI — all real subprocesses (the tombstone
test runs the resync's steps in-process, against the same real services).

The oracles: ``searchsync verify`` (every row of the view equals its document behind
the alias, nothing else is there) and a search loop through the alias that must
never see an error or an emptied index.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch, OpenSearch
from redis.asyncio import Redis

from searchsync.cli.resync_run import Context, ResyncError, execute, gather
from searchsync.common.config import load_settings
from searchsync.common.keys import RECONCILE_DONE, Keys
from searchsync.common.opensearch import make_client
from searchsync.common.redis_client import connect_redis
from searchsync.common.resync import (
    Phase,
    Plan,
    Record,
    Step,
    Verdict,
    parse_record,
    plan,
    plan_abort,
)
from searchsync.consumer.dualwrite import DualWrite
from searchsync.consumer.reconcile import Reconciler
from tests.support.pipeline import CLI, Pipeline, pipeline_of
from tests.support.producer import start_load, wait_for

pytestmark = pytest.mark.timeout(240)

ORDERS = 3000


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=ORDERS, partitions=4, realistic=True) as pipe:
        yield pipe


@pytest.fixture
def small_pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=300, partitions=4, realistic=True) as pipe:
        yield pipe


class SearchLoop:
    """``_search`` through the alias every 20 ms; records totals and errors."""

    def __init__(self, pipeline: Pipeline) -> None:
        services = pipeline.os_env
        self.client = OpenSearch(
            hosts=[{"host": services["OS_HOST"], "port": int(services["OS_PORT"])}]
        )
        self.alias = pipeline.alias
        self.totals: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SearchLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def _run(self) -> None:
        body = {"size": 1, "query": {"match_all": {}}, "track_total_hits": True}
        while not self._stop.is_set():
            try:
                response = self.client.search(index=self.alias, body=body)
                self.totals.append(int(response["hits"]["total"]["value"]))
            except Exception as error:  # any failure is what the test looks for
                self.errors.append(repr(error))
            self._stop.wait(0.02)


def record_of(pipeline: Pipeline) -> Any:
    raw: Any = pipeline.stack.sync_redis().hgetall(pipeline.stack.keys.resync)
    return parse_record(raw)


def start_resync(pipeline: Pipeline, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLI), "resync", "--yes", "--json", *args],
        env={**os.environ, **pipeline.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, (out, err)
    result: dict[str, Any] = json.loads(out)
    return result


def write_index_of(pipeline: Pipeline) -> list[str]:
    found = pipeline.search.indices.get_alias(name=pipeline.alias)
    return sorted(found)


def resync_alias_holders(pipeline: Pipeline) -> list[str]:
    """The indexes behind ``<alias>_resync`` (an alias, never a concrete index)."""
    found = pipeline.search.indices.get_alias(name=f"{pipeline.alias}_resync")
    return sorted(found)


def kill_while_loading(pipeline: Pipeline, process: subprocess.Popen[str]) -> None:
    """SIGKILL ``process`` once its load has written documents, before it ends."""

    def loading() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"resync ended before its load: {process.communicate()}")
        record = record_of(pipeline)
        if record is None or record.phase is not Phase.LOADING:
            return False
        stats = pipeline.search.indices.stats(index=record.target, metric="indexing")
        written = int(stats["_all"]["primaries"]["indexing"]["index_total"])
        return written >= 200  # the live load dual-writes a few dozen at most meanwhile

    wait_for(loading, 60, "the resync's load to be under way", interval=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def test_resync_under_live_load_with_a_consumer_killed(pipeline: Pipeline) -> None:
    pipeline.stack.producer(**pipeline.env())
    first = pipeline.consumer("c1")
    pipeline.consumer("c2")
    pipeline.wait_synced()
    initial = pipeline.search.count(index=pipeline.alias)["count"]
    assert write_index_of(pipeline) == [f"{pipeline.alias}_v1"]

    load = start_load(pipeline.stack, rate=40, seconds=12)
    with SearchLoop(pipeline) as searches:
        time.sleep(2)
        resync = start_resync(pipeline, "--grace", "2")
        record = wait_for(lambda: record_of(pipeline), 30, "the resync's record", interval=0.01)
        first.signal(signal.SIGKILL)  # mid-resync: its partitions move, it never confirms
        pipeline.consumer("c3")
        result = finished(resync)
        _, err = load.communicate(timeout=60)
        assert load.returncode == 0, err
        pipeline.wait_synced(timeout=120)
    assert result["outcome"] == "swapped", result
    assert result["new_index"] == f"{pipeline.alias}_v2" == record.target
    assert result["as_of"] >= result["high_water"] > 0
    assert result["written"] + result["newer_live"] >= initial * 0.9
    assert write_index_of(pipeline) == [f"{pipeline.alias}_v2"]

    report = pipeline.verify(settle=20)
    assert report["ok"], (report, pipeline.logs())
    assert pipeline.status()["dlq_length"] == 0
    assert not searches.errors, searches.errors[:3]
    assert len(searches.totals) > 100
    assert min(searches.totals) >= initial * 0.9, (min(searches.totals), initial)

    # dual writes stopped, <alias>_resync stays on the live index, the old one goes after --grace
    assert record_of(pipeline) is None
    assert resync_alias_holders(pipeline) == [f"{pipeline.alias}_v2"]
    wait_for(
        lambda: not pipeline.search.indices.exists(index=f"{pipeline.alias}_v1"),
        30,
        "a consumer to delete the retired index",
        interval=0.5,
    )
    assert "Deleted index" in "".join(c.log() for c in pipeline.consumers.values())


def test_resync_killed_mid_load_resumes_and_an_aborted_one_leaves_the_live_index(
    pipeline: Pipeline,
) -> None:
    pipeline.stack.producer(**pipeline.env())
    consumer = pipeline.consumer("c1")
    pipeline.wait_synced()
    alias = pipeline.alias

    load = start_load(pipeline.stack, rate=30, seconds=10)
    kill_while_loading(pipeline, start_resync(pipeline))
    killed = record_of(pipeline)
    assert killed.phase is Phase.LOADING and killed.loaded is None  # killed before the end
    resumed = pipeline.cli("resync", "--yes", "--json")
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    result = json.loads(resumed.stdout)
    assert (result["outcome"], result["resumed_from"]) == ("swapped", "loading")
    assert result["resync_id"] == killed.id
    assert write_index_of(pipeline) == [f"{alias}_v2"]

    # a second resync, killed mid-load, then abandoned
    kill_while_loading(pipeline, start_resync(pipeline, "--keep-old"))
    assert record_of(pipeline).target == f"{alias}_v3"
    live_before = pipeline.search.indices.get_settings(index=f"{alias}_v2")
    aborted = pipeline.cli("resync", "--abort", "--yes", "--json")
    assert aborted.returncode == 0, (aborted.stdout, aborted.stderr)
    assert json.loads(aborted.stdout)["outcome"] == "aborted"
    assert not pipeline.search.indices.exists(index=f"{alias}_v3")
    assert record_of(pipeline) is None
    assert resync_alias_holders(pipeline) == [f"{alias}_v2"]  # late dual writes land there
    assert write_index_of(pipeline) == [f"{alias}_v2"]
    assert pipeline.search.indices.get_settings(index=f"{alias}_v2") == live_before
    wait_for(
        lambda: consumer.log().count("Resync over: writing to the alias only") >= 2,
        5,
        "the consumer to go back to single writes",
    )
    nothing = pipeline.cli("resync", "--abort", "--yes", "--json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["outcome"] == "nothing"
    human = pipeline.cli("resync", "--abort")
    assert human.returncode == 0 and "no resync is in progress" in human.stdout, human

    # without --yes and with no answer on stdin nothing changes (exit 1), human form
    asked = subprocess.run(
        [str(CLI), "resync"],
        env={**os.environ, **pipeline.env()},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert asked.returncode == 1, asked
    assert f"move {alias} from {alias}_v2 to {alias}_v3" in asked.stdout  # v3 was aborted
    assert "not confirmed: nothing was changed" in asked.stderr
    assert record_of(pipeline) is None and not pipeline.search.indices.exists(index=f"{alias}_v3")

    _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    pipeline.wait_synced(timeout=120)
    report = pipeline.verify(settle=20)
    assert report["ok"], (report, pipeline.logs())


def test_a_consumer_that_does_not_confirm_blocks_the_load_until_it_is_gone(
    small_pipeline: Pipeline,
) -> None:
    """A live member that never confirms (an older searchsync) stops the resync before
    anything is loaded, named; once its heartbeat is stale the resync resumes. A key
    with two rows in the view (a key violation) gets the live index's document."""
    pipe = small_pipeline
    pipe.stack.producer(**pipe.env())
    pipe.consumer("c1")
    pipe.wait_synced()
    redis = pipe.stack.sync_redis()
    violated = "order:FM-1001"
    indexed = pipe.search.get(index=pipe.alias, id=violated)["_source"]
    extra_task = (
        "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
        "VALUES ('task:T-extra', 'task_of_order', %s, 'entity_ref')"
    )
    with pipe.stack.pg() as pg, pg.transaction():
        pg.execute(extra_task, (violated,))
    wait_for(lambda: pipe.status()["dlq_length"] >= 1, 30, "the key violation's dead letter")

    def beat() -> None:
        seconds, micros = redis.time()
        redis.zadd(pipe.stack.keys.members, {"old-searchsync": seconds * 1000 + micros // 1000})

    blocked = start_resync(pipe, "--confirm-timeout", "2")
    while blocked.poll() is None:
        beat()
        time.sleep(0.2)
    out, err = blocked.communicate()
    assert blocked.returncode == 1, (out, err)
    result = json.loads(out)
    assert result["outcome"] == "stopped" and "old-searchsync" in result["message"]
    waiting = [line for line in err.splitlines() if "not writing to both indexes yet" in line]
    assert waiting and "old-searchsync" in waiting[-1], err  # the progress line names it
    assert result["rows"] is None and record_of(pipe).phase is Phase.DUAL_WRITE

    time.sleep(2.5)  # LEASE_TTL_SECONDS: the member no longer counts as live
    resumed = pipe.cli("resync", "--yes", "--json")
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    result = json.loads(resumed.stdout)
    assert result["resumed_from"] == "dual_write" and result["key_violations"] == 1
    assert set(result["not_compared_key_violations"]) <= {violated}
    assert pipe.search.get(index=f"{pipe.alias}_v2", id=violated)["_source"] == indexed

    with pipe.stack.pg() as pg, pg.transaction():  # the survivor is written: no drift left
        pg.execute("DELETE FROM triples WHERE subject_id = 'task:T-extra'")
    pipe.wait_synced()
    report = pipe.verify(settle=10)
    assert report["ok"], (report, pipe.logs())


class _Quiet:
    def note(self, line: str) -> None:
        pass

    def update(
        self, what: str, done: int, total: int | None = None, *, force: bool = False
    ) -> None:
        pass


def _steps(record: Record, *steps: Step) -> Plan:
    """A plan of just ``steps`` for ``record`` (the test drives the resync step by step)."""
    return Plan(Verdict.RUN, steps, record)


async def test_a_delete_newer_than_the_snapshot_is_not_resurrected_by_the_load(
    pipeline: Pipeline,
) -> None:
    """The tombstone of a dual-written delete (version > T) arrives before the load
    writes the key's snapshot row (version T): the row must be refused. A reconcile
    run meanwhile deletes stale documents from the new index as well, and a verify
    that finds documents missing sends the resync back to loading."""
    pipeline.stack.producer(**pipeline.env())
    pipeline.consumer("c1")
    pipeline.wait_synced()
    settings = load_settings(pipeline.env())
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings)
    client = make_client(settings)
    ctx = Context(settings, redis, client, keys, _Quiet(), confirm_timeout=30, settle=5)
    victim = "order:FM-1001"
    try:
        record, facts = await gather(redis, client, keys, pipeline.alias)
        fresh = plan(record, facts, alias=pipeline.alias, new_id="t1", now_ms=1).record
        assert fresh is not None
        head = (Step.START, Step.CREATE_TARGET, Step.DUAL_WRITE, Step.WAIT_CONFIRMED)
        report = await execute(ctx, _steps(fresh, *head))
        assert report.record is not None
        later = int(time.time() * 1000) + 3_600_000  # above any T the load can pick
        body = json.dumps({"delete": {"_id": victim, "version": later,
                                      "version_type": "external_gte"}}) + "\n"  # fmt: skip
        await client.bulk(
            body=body, index=report.record.write_alias, params={"require_alias": "true"}
        )
        report = await execute(ctx, _steps(report.record, Step.LOAD, Step.FINISH_LOAD))
        assert report.record is not None and report.loaded is not None
        assert report.loaded.as_of < later
        assert report.loaded.newer >= 1  # the victim's row, refused by the tombstone
        target = report.record.target
        assert not (await client.exists(index=target, id=victim))
        assert await client.exists(index=pipeline.alias, id=victim)  # the view still has it
        assert (await client.count(index=target))["count"] == report.loaded.written

        await _reconcile_cleans_the_new_index(pipeline, redis, client, keys, report.record)
        await _a_failed_verify_loads_again(ctx, pipeline, report.record)

        record, facts = await gather(redis, client, keys, pipeline.alias)
        await execute(ctx, plan_abort(record, facts, alias=pipeline.alias))
        assert not (await client.indices.exists(index=target))
    finally:
        await client.close()
        await redis.aclose()


async def _reconcile_cleans_the_new_index(
    pipeline: Pipeline, redis: Redis, client: AsyncOpenSearch, keys: Keys, record: Record
) -> None:
    """A reconcile (snapshot at ts 2) while consumers dual-write cleans the new index too."""
    stale = [
        {"index": {"_id": "order:STALE", "version": 1, "version_type": "external_gte"}},
        {"order_id": "order:STALE", "sync_version": 1},
    ]
    body = "".join(json.dumps(line) + "\n" for line in stale)
    await client.bulk(body=body, index=record.write_alias, params={"refresh": "true"})
    await redis.hset(keys.reconcile, "2", "pending")
    dual = DualWrite(redis, keys, "test")
    await dual.refresh()
    assert dual.target == record.write_alias
    reconciler = Reconciler(redis, client, keys, pipeline.alias, "test", dual=dual)
    # the running consumer's housekeeping runs due reconciles too, and may take the lock
    # first: either way, the one that runs it cleans the new index as well
    if await reconciler.run_due() != [2]:
        deadline = time.monotonic() + 30
        while await redis.hget(keys.reconcile, "2") != RECONCILE_DONE:
            assert time.monotonic() < deadline, "the consumer's reconcile of ts 2 never ended"
            await asyncio.sleep(0.1)
    assert await redis.hget(keys.reconcile, "2") == RECONCILE_DONE
    assert not (await client.exists(index=record.target, id="order:STALE"))


async def _a_failed_verify_loads_again(ctx: Context, pipeline: Pipeline, record: Record) -> None:
    """A document missing from the new index: the verify refuses the swap and sends the
    resync back to loading; the next run loads again (the victim stays deleted: its
    tombstone is newer than any snapshot)."""
    lost = "order:FM-1002"
    await ctx.client.delete(index=record.target, id=lost, params={"refresh": "true"})
    with pytest.raises(ResyncError, match="differs from the view in 2 documents"):
        await execute(ctx, _steps(record, Step.VERIFY))
    found, facts = await gather(ctx.redis, ctx.client, ctx.keys, pipeline.alias)
    assert found is not None and found.phase is Phase.LOADING
    again = plan(found, facts, alias=pipeline.alias, new_id="unused", now_ms=1)
    assert again.steps[:3] == (Step.WAIT_CONFIRMED, Step.LOAD, Step.FINISH_LOAD)
    assert again.record is not None
    await execute(ctx, _steps(again.record, *again.steps[:3]))
    assert await ctx.client.exists(index=record.target, id=lost)
