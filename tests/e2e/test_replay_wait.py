"""``searchsync replay`` and ``searchsync wait`` against a running pipeline.

Services: real PostgreSQL (a private FreshMart schema), a private Materialize
emulator process over it, a private redis-server, the shared OpenSearch node (a
private index alias). Processes: ``producer.main``, ``consumer.main`` and the
``searchsync`` CLI — all real subprocesses. The tests share one pipeline and run in
file order (the last one trims a stream).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tests.support.pipeline import CLI, Pipeline, pipeline_of
from tests.support.producer import set_status, stream_changes, wait_for

pytestmark = pytest.mark.timeout(120)

LOST = ["order:FM-1002", "order:FM-1005", "order:FM-1011", "order:FM-1017"]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=24, partitions=3) as pipe:
        pipe.stack.producer(**pipe.env())
        pipe.consumer("c1")
        pipe.wait_drained()
        yield pipe


def _counts(pipeline: Pipeline) -> dict[str, int]:
    keys, client = pipeline.stack.keys, pipeline.stack.sync_redis()
    found: dict[str, int] = {}
    for partition in range(keys.partitions):
        raw = cast(dict[bytes, bytes], client.hgetall(keys.counts(partition)))
        found.update({name.decode(): int(value) for name, value in raw.items()})
    return found


def _applied(pipeline: Pipeline) -> dict[str, int]:
    keys, client = pipeline.stack.keys, pipeline.stack.sync_redis()
    raw = {n: cast(bytes | None, client.get(keys.applied(n))) for n in range(keys.partitions)}
    return {keys.partition_name(n): int(value) for n, value in raw.items() if value is not None}


def _delivered(pipeline: Pipeline) -> list[tuple[int, int]]:
    """The group's last-delivered-id per partition (progress entries move it on)."""
    client = pipeline.stack.sync_redis()
    out: list[tuple[int, int]] = []
    for stream in pipeline.stack.keys.streams():
        raw = client.xinfo_groups(stream)[0]["last-delivered-id"]
        ms, _, seq = raw.decode().partition("-")
        out.append((int(ms), int(seq)))
    return out


def _not_moved_back(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> bool:
    return all(now >= then for then, now in zip(before, after, strict=True))


def _written(pipeline: Pipeline) -> dict[str, int]:
    return {k: v for k, v in _counts(pipeline).items() if k.startswith("written:")}


def _lose(pipeline: Pipeline, keys: list[str]) -> None:
    """The index forgets documents without learning of anything newer (as after a
    restored snapshot): each is deleted at its own version (external_gte)."""
    for key in keys:
        doc = pipeline.search.get(index=pipeline.alias, id=key)
        pipeline.search.delete(
            index=pipeline.alias, id=key, version=doc["_version"], version_type="external_gte"
        )
    # verify reads the index through _search, which sees the deletes only once refreshed
    pipeline.search.indices.refresh(index=pipeline.alias)


def _first_entry_time(pipeline: Pipeline) -> str:
    """The ISO time (ms) of the oldest entry of any partition."""
    client = pipeline.stack.sync_redis()
    firsts = [cast(list[Any], client.xrange(s, count=1)) for s in pipeline.stack.keys.streams()]
    ms = min(int(rows[0][0].split(b"-")[0]) for rows in firsts if rows)
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _balanced(pipeline: Pipeline) -> None:
    """Every change written was acknowledged once: written:p<N> == acked:p<N>."""
    counts = _counts(pipeline)
    for n in range(pipeline.stack.partitions):
        assert counts.get(f"written:p{n}", 0) == counts.get(f"acked:p{n}", 0), counts


def test_replay_restores_documents_the_index_lost(pipeline: Pipeline) -> None:
    _balanced(pipeline)
    _lose(pipeline, LOST)
    drift = pipeline.verify(settle=0)
    assert sorted(drift["missing"]) == sorted(LOST), drift
    applied = _applied(pipeline)
    since = _first_entry_time(pipeline)

    result = pipeline.cli("replay", "--since", since, "--yes")
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    assert "Replayed: " in result.stdout
    assert "Replays are safe" in result.stdout
    assert "never overwrites a newer document" in result.stdout

    pipeline.wait_drained()
    report = pipeline.verify(settle=10)
    assert report["ok"], (report, pipeline.logs())
    # the replayed changes were counted in as they were acknowledged again
    _balanced(pipeline)
    # The producer keeps writing progress entries (every 100 ms a partition): one in a
    # consumer's hands is pending, and a pending entry counts as one change
    # (common.buffer), so a single reading may catch 1-3 on this idle pipeline. A
    # replay counted wrong stays above 0 for good.
    status = pipeline.wait_status(lambda s: s["buffer"] == 0, 10, "an empty buffer")
    assert all(p["buffer"] >= 0 for p in status["partitions"])
    after = _applied(pipeline)
    assert all(after[name] >= ts for name, ts in applied.items()), (applied, after)


def test_replay_json_asks_first_and_reports_per_partition(pipeline: Pipeline) -> None:
    first_id = cast(list[Any], pipeline.stack.sync_redis().xrange(
        pipeline.stack.keys.stream(1), count=1
    ))[0][0].decode()  # fmt: skip
    before = _delivered(pipeline)
    written = _written(pipeline)
    # no --yes, stdin answers nothing: nothing changes
    refused = pipeline.cli("replay", "--since", first_id, "--partition", "1", "--json")
    assert refused.returncode == 1, refused.stderr
    assert json.loads(refused.stdout)["outcome"] == "not confirmed"
    assert "Proceed? [y/N]" in refused.stderr
    assert _not_moved_back(before, _delivered(pipeline))
    assert _written(pipeline) == written

    result = pipeline.cli("replay", "--since", first_id, "--partition", "1", "--json", "--yes")
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "replayed"
    [row] = report["partitions"]
    assert row["partition"] == 1
    assert row["first"] == first_id
    assert row["entries"] >= 1
    assert report["changes"] == row["changes"] >= 1
    moved = _delivered(pipeline)
    assert moved[0] >= before[0] and moved[2] >= before[2]  # other partitions untouched
    assert _written(pipeline)["written:p1"] == written["written:p1"] + row["changes"]
    assert _written(pipeline)["written:p0"] == written["written:p0"]
    pipeline.wait_drained()
    _balanced(pipeline)
    assert pipeline.verify(settle=10)["ok"]


def _change_ts(pipeline: Pipeline, key: str, status: str) -> int:
    def found() -> int | None:
        changes, _ = stream_changes(pipeline.stack.sync_redis(), pipeline.stack.keys)
        for change in changes:
            if change.key == key.encode() and change.doc and status.encode() in change.doc:
                return change.ts
        return None

    ts: int = wait_for(found, 20, f"the change of {key} in the stream")
    return ts


def _searched_status(pipeline: Pipeline, key: str) -> str | None:
    hits = pipeline.search.search(index=pipeline.alias, body={"query": {"ids": {"values": [key]}}})[
        "hits"
    ]["hits"]
    return hits[0]["_source"]["order_status"] if hits else None


def test_wait_ts_returns_once_search_sees_the_change(pipeline: Pipeline) -> None:
    """GET by id is real time, ``_search`` waits for a refresh: with no scheduled
    refresh (refresh_interval -1) GET sees the change while search cannot, for as long
    as nobody refreshes; wait returns only after search does (it forces one refresh).

    (With a 5 s interval the test raced: a scheduled refresh right after the bulk made
    the change searchable before the test first looked, and CI saw no difference.)"""
    pipeline.search.indices.put_settings(
        index=pipeline.alias, body={"index": {"refresh_interval": "-1"}}
    )
    key, status = "order:FM-1008", "waited_for"
    set_status(pipeline.stack, key, status)
    ts = _change_ts(pipeline, key, status)

    def retrievable() -> bool:
        doc = pipeline.search.get(index=pipeline.alias, id=key)["_source"]
        return bool(doc["order_status"] == status)

    wait_for(retrievable, 30, "GET by id to return the change")
    assert _searched_status(pipeline, key) != status  # the difference: GET has it, search not
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), "wait", "--ts", str(ts), "--timeout", "30", "--json"],
        env={**os.environ, **pipeline.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    returned = time.monotonic()
    searched = _searched_status(pipeline, key)
    print(done.stdout)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert searched == status  # visible to _search right after wait returned
    report = json.loads(done.stdout)
    assert report["ok"] and report["ts"] == ts and report["behind"] == []
    assert report["refresh"] == "forced"  # no schedule: nothing else would publish it
    assert all(applied > ts for applied in report["applied"].values())
    assert returned - started < 20


def test_wait_now_and_timeout(pipeline: Pipeline) -> None:
    pipeline.search.indices.put_settings(
        index=pipeline.alias, body={"index": {"refresh_interval": "1s"}}
    )
    now = pipeline.cli("wait", "--now", "--timeout", "20")
    print(now.stdout)
    assert now.returncode == 0, now.stderr
    assert now.stdout.startswith("OK: every change at or below ts ")

    future = int(time.time() * 1000) + 3_600_000
    late = pipeline.cli("wait", "--ts", str(future), "--timeout", "1", "--json")
    print(late.stdout)
    assert late.returncode == 1, late.stderr
    report = json.loads(late.stdout)
    assert not report["ok"]
    assert [b["partition"] for b in report["behind"]] == list(range(pipeline.stack.partitions))
    assert all(3_500_000 < b["behind_ms"] <= 3_600_001 for b in report["behind"])
    human = pipeline.cli("wait", "--ts", str(future), "--timeout", "0.5")
    print(human.stdout)
    assert human.returncode == 1
    assert human.stdout.startswith("TIMEOUT after ")
    assert "p0: applied through " in human.stdout


def test_replay_refuses_what_retention_removed(pipeline: Pipeline) -> None:
    client = pipeline.stack.sync_redis()
    stream = pipeline.stack.keys.stream(2)
    entries = cast(list[Any], client.xrange(stream))
    assert len(entries) >= 4
    cut = entries[len(entries) // 2][0].decode()
    # what the consumers' retention does once entries are acknowledged and old enough
    client.xtrim(stream, minid=cut, approximate=False)
    before = _delivered(pipeline)
    written = _written(pipeline)
    since = entries[0][0].decode()

    result = pipeline.cli("replay", "--since", since, "--yes")
    print(result.stderr)
    assert result.returncode == 1
    assert "REFUSED p2:" in result.stderr
    assert "searchsync resync" in result.stderr
    as_json = pipeline.cli("replay", "--since", since, "--yes", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["outcome"] == "refused"
    assert [p["partition"] for p in report["partitions"] if p["refused"]] == [2]
    # a Materialize ts older than what p2 kept is refused as well
    oldest_ts = int(entries[0][1][b"ts"])
    assert pipeline.cli("replay", "--since", str(oldest_ts), "--yes").returncode == 1
    assert _not_moved_back(before, _delivered(pipeline))
    assert _written(pipeline) == written
    # from the cut on, everything is there
    fine = pipeline.cli("replay", "--since", cut, "--partition", "2", "--yes", "--json")
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["outcome"] == "replayed"
