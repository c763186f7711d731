"""``python -m searchsync.consumer.main`` as operators run it: metrics endpoint, log lines,
exit codes.

Real Redis and the devstack's OpenSearch node; one consumer subprocess per test,
stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.consumer import PYTHON, ROOT, ConsumerProcess, Stack, stack_fixture, wait_for
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(90)


stack = stack_fixture(partitions=2)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_metrics_logs_and_clean_exit(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = stack.consumer_env(METRICS_PORT=port, BUFFER_LOG_SECONDS=0.5)
    proc = ConsumerProcess(env, "cons-main", tmp_path)
    try:
        t = int(time.time() * 1000)
        await stack.write(t, [(f"order:FM-{n}", {"order_status": "PLACED"}) for n in range(20)])
        await stack.write(t + 1, [("order:FM-3", None)])
        await stack.progress(t + 2)

        async def synced() -> bool:
            try:
                text = await asyncio.to_thread(scrape, port)
            except OSError:
                return False
            return 'opensearch_sync_events_total{op="delete"} 1.0' in text

        await wait_for(synced, 30, "metrics showing the synced changes")
        text = await asyncio.to_thread(scrape, port)
        assert 'opensearch_sync_events_total{op="upsert"} 20.0' in text
        assert "opensearch_sync_latency_seconds_count" in text
        assert "opensearch_sync_buffer_size" in text
        assert 'opensearch_sync_partition_owned{consumer="cons-main",partition="0"} 1.0' in text
        assert "opensearch_sync_partition_applied_timestamp_seconds" in text

        async def buffer_logged() -> bool:
            return "Consumer buffer: " in proc.log()

        await wait_for(buffer_logged, 30, "the periodic buffer log line")
        proc.signal(signal.SIGTERM)
        assert proc.wait(12) == 0
    finally:
        proc.ensure_dead()
    log = proc.log()
    assert "Synced " in log and " documents, 0 errors" in log
    assert "Consumer buffer: " in log
    assert log.rstrip().endswith("[INFO] Orders sync worker stopped")


def test_bad_configuration_exits_2() -> None:
    result = subprocess.run(
        [str(PYTHON), "-m", "searchsync.consumer.main"],
        cwd=ROOT,
        env={**os.environ, "LEASE_TTL_SECONDS": "soon"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"LEASE_TTL_SECONDS" in result.stderr


async def test_the_index_a_consumer_creates_refreshes_every_os_refresh_interval(
    stack: Stack, tmp_path: Path
) -> None:
    alias = f"{stack.alias}_refresh"
    env = stack.consumer_env(OS_INDEX_NAME=alias, OS_REFRESH_INTERVAL="250ms")
    proc = ConsumerProcess(env, "cons-refresh", tmp_path)
    try:

        async def created() -> bool:
            return bool(await stack.search.indices.exists_alias(name=alias))

        await wait_for(created, 30, "the consumer to create its index")
        found = await stack.search.indices.get_settings(
            index=alias, name="index.refresh_interval", flat_settings=True
        )
        assert [s["settings"]["index.refresh_interval"] for s in found.values()] == ["250ms"]
        proc.signal(signal.SIGTERM)
        assert proc.wait(12) == 0
    finally:
        proc.ensure_dead()
        await stack.search.indices.delete(index=f"{alias}_v*", expand_wildcards="all")
