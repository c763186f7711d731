"""The stream layout is fixed at creation: a producer or consumer whose settings
disagree with it refuses to start (exit 2, the variable named) instead of
orphaning the entries of partitions it no longer reads.

A view whose keys are still in key layout 1 (no hash tags) is refused the same way,
naming ``searchsync migrate-layout``, which moves them in one script.

Services: the devstack Redis (a unique view name, its keys deleted afterwards);
real ``producer.main`` and ``consumer.main`` processes and the CLI. Materialize and
OpenSearch are not reached: the check comes first (their addresses point nowhere).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devstack.env import require
from searchsync.common.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def view() -> Iterator[str]:
    name = f"test_layout_{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    for pattern in (f"searchsync:{name}:*", Keys(name, 1).pattern):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


def run(module: str, view: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": require(["REDIS_URL"])["REDIS_URL"],
            "VIEW_NAME": view,
            "MZ_HOST": "127.0.0.1",
            "MZ_PORT": "1",
            "OS_HOST": "127.0.0.1",
            "OS_PORT": "1",
            "LOG_FORMAT": "text",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def created(view: str, partitions: int) -> None:
    """Streams written by a producer with ``partitions`` partitions: their layout and
    the streams themselves (a consumer creates both the same way)."""
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    keys = Keys(view, partitions)
    for n in range(partitions):
        client.xadd(keys.stream(n), {"ts": "1", "op": "p"})
    client.hset(
        keys.meta,
        mapping={"layout": "2", "partitions": partitions, "view": view, "key_column": "order_id"},
    )


@pytest.mark.parametrize("module", ["searchsync.producer.main", "searchsync.consumer.main"])
def test_a_different_partition_count_is_refused(view: str, module: str) -> None:
    created(view, 8)
    proc = run(module, view, STREAM_PARTITIONS="4")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "STREAM_PARTITIONS=4 but the streams of view" in proc.stderr
    assert "STREAM_PARTITIONS=8" in proc.stderr


def test_a_different_key_column_is_refused(view: str) -> None:
    created(view, 8)
    proc = run("searchsync.consumer.main", view, STREAM_PARTITIONS="8", KEY_COLUMN="order_number")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "KEY_COLUMN=order_number" in proc.stderr and "KEY_COLUMN=order_id" in proc.stderr


def test_streams_from_before_the_layout_record_are_checked_too(view: str) -> None:
    created(view, 8)
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    client.delete(Keys(view, 8).meta)  # written by a version that kept none
    proc = run("searchsync.producer.main", view, STREAM_PARTITIONS="4")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "already has a stream p7" in proc.stderr


def created_in_layout_1(client: redis.Redis, view: str) -> None:
    """Two partitions as a searchsync before key layout 2 left them: an entry pending
    in p0's group, one acknowledged in p1's, the applied and counts hashes, a checkpoint."""
    old = f"searchsync:{view}:"
    client.hset(
        old + "meta",
        mapping={"layout": "1", "partitions": "2", "view": view, "key_column": "order_id"},
    )
    for n in range(2):
        client.xadd(f"{old}p{n}", {"ts": "5", "op": "d", "key": f"k{n}"}, id="5-0")
        client.xgroup_create(f"{old}p{n}", "searchsync", id="0")
        client.xreadgroup("searchsync", "c1", {f"{old}p{n}": ">"})
    client.xack(f"{old}p1", "searchsync", "5-0")
    client.hset(old + "applied", mapping={"p0": "4", "p1": "6"})
    client.hset(old + "counts", mapping={"written:p0": "1", "written:p1": "1", "acked:p1": "1"})
    client.hset(old + "attempts:p0", "5-0", "2")
    client.set(old + "checkpoint", "6")
    client.set(old + "producer:epoch", "3")


def test_a_layout_1_view_is_refused_until_migrate_layout_moves_it(view: str) -> None:
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    created_in_layout_1(client, view)
    refused = run("searchsync.producer.main", view, STREAM_PARTITIONS="2")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"view {view} has Redis keys of key layout 1" in refused.stderr
    assert "run `searchsync migrate-layout`" in refused.stderr
    consumer = run("searchsync.consumer.main", view, STREAM_PARTITIONS="2")
    assert consumer.returncode == 2, consumer.stderr[-2000:]
    assert "run `searchsync migrate-layout`" in consumer.stderr
    keys = Keys(view, 2)
    # refused before writing anything (the producer's buffer monitor, which creates
    # missing streams and groups, starts only after the check)
    assert not list(client.scan_iter(match=keys.pattern))

    moved = subprocess.run(
        [sys.executable, "-m", "searchsync", "migrate-layout", "--yes", "--json"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": require(["REDIS_URL"])["REDIS_URL"], "VIEW_NAME": view,
             "STREAM_PARTITIONS": "2", "MZ_HOST": "127.0.0.1", "OS_HOST": "127.0.0.1"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert moved.returncode == 0, (moved.stdout, moved.stderr[-2000:])
    assert '"migrated":true' in moved.stdout
    assert not list(client.scan_iter(match=f"searchsync:{view}:*"))
    pending: Any = client.xpending(keys.stream(0), "searchsync")
    assert pending["pending"] == 1 and pending["consumers"][0]["name"] == b"c1"
    assert client.xpending(keys.stream(1), "searchsync")["pending"] == 0
    assert [client.get(keys.applied(n)) for n in range(2)] == [b"4", b"6"]
    assert client.hgetall(keys.counts(0)) == {b"written:p0": b"1"}
    assert client.hgetall(keys.counts(1)) == {b"written:p1": b"1", b"acked:p1": b"1"}
    assert client.hget(keys.attempts(0), "5-0") == b"2"
    assert client.get(keys.checkpoint) == b"6" and client.get(keys.producer_epoch) == b"3"
    meta: Any = client.hgetall(keys.meta)
    assert meta[b"layout"] == b"2" and meta[b"partitions"] == b"2"
    # the layout check passes now: the producer gets as far as Materialize (nowhere)
    started = run("searchsync.producer.main", view, STREAM_PARTITIONS="4")
    assert "STREAM_PARTITIONS=4 but the streams of view" in started.stderr


def test_migrate_layout_refuses_while_a_lease_is_held(view: str) -> None:
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    created_in_layout_1(client, view)
    client.set(f"searchsync:{view}:lease:p1", "consumer-a", px=60_000)
    refused = subprocess.run(
        [sys.executable, "-m", "searchsync", "migrate-layout", "--yes"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": require(["REDIS_URL"])["REDIS_URL"], "VIEW_NAME": view,
             "STREAM_PARTITIONS": "2", "MZ_HOST": "127.0.0.1", "OS_HOST": "127.0.0.1"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode == 1, (refused.stdout, refused.stderr[-2000:])
    assert f"searchsync:{view}:lease:p1 is held" in refused.stdout
    assert client.exists(f"searchsync:{view}:p0", f"searchsync:{view}:meta") == 2
    assert not list(client.scan_iter(match=Keys(view, 2).pattern))
