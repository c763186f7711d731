"""The stream layout is fixed at creation: a producer or consumer whose settings
disagree with it refuses to start (exit 2, the variable named) instead of
orphaning the entries of partitions it no longer reads.

Services: the devstack Redis (a unique view name, its keys deleted afterwards);
real ``producer.main`` and ``consumer.main`` processes. Materialize and OpenSearch
are not reached: the check comes first (their addresses point nowhere).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.env import require

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def view() -> Iterator[str]:
    name = f"test_layout_{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(require(["REDIS_URL"])["REDIS_URL"])
    for key in client.scan_iter(match=f"searchsync:{name}:*"):
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
    prefix = f"searchsync:{view}:"
    for n in range(partitions):
        client.xadd(f"{prefix}p{n}", {"ts": "1", "op": "p"})
    client.hset(
        f"{prefix}meta",
        mapping={"layout": "1", "partitions": partitions, "view": view, "key_column": "order_id"},
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
    client.delete(f"searchsync:{view}:meta")  # written by a version that kept none
    proc = run("searchsync.producer.main", view, STREAM_PARTITIONS="4")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "already has a stream p7" in proc.stderr
