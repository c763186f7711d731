"""OpenSearch answering 401 (a rotated OS_PASSWORD): block and retry, never dead-letter.

Real services: the devstack's Redis and OpenSearch node, a real consumer process
(``python -m searchsync.consumer.main``) that reaches OpenSearch through an HTTP proxy
(tests.support.http_proxy) which, for a while, answers every request with 401 and
the security plugin's body, as a node does after its credentials were rotated.
Meanwhile the consumer's /healthz says 503 naming OpenSearch and the 401.
Before the fix every change written during the window went to the dead-letter
stream (a refused request was split down to single items, each dead-lettered),
while the index went stale and ``searchsync status`` looked healthy.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from searchsync.common.index import ensure_index
from tests.support.consumer import (
    PYTHON,
    ROOT,
    ConsumerProcess,
    Stack,
    orders,
    stack_fixture,
    wait_for,
)
from tests.support.http_proxy import HttpProxy
from tests.support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


stack = stack_fixture(partitions=2)


def status(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(PYTHON), "-m", "searchsync", "status", "--json"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def auth_errors(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith('opensearch_sync_errors_total{kind="auth"}'):
            return float(line.split()[-1])
    return 0.0


async def test_401_blocks_the_partitions_and_dead_letters_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    proxy = HttpProxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    proxy.start()
    metrics_port = free_port()
    env = stack.consumer_env(
        OS_PORT=proxy.port, METRICS_PORT=metrics_port, RETRY_MAX_BACKOFF=0.5, MAX_DELIVERIES=2
    )
    await ensure_index(stack.search, stack.alias, retention_seconds=3600)
    consumer = ConsumerProcess(env, "cons-auth", tmp_path)
    t = int(time.time() * 1000)
    try:
        await stack.write(t, orders(0, 10))
        await wait_for(lambda: _outstanding_is(stack, 0), 30, "the first changes synced")
        proxy.set_unauthorized(True)  # the password was rotated under the consumer
        await stack.write(t + 1, orders(10, 40))
        await stack.progress(t + 2)
        await asyncio.sleep(5)  # many retries inside the window, each answered 401
        letters = await stack.dead_letters()
        assert letters == [], f"{len(letters)} changes dead-lettered for a 401"
        await wait_for(lambda: _blocked_everywhere(env, stack.partitions), 30, "blocked status")
        report = status(env)
        assert all("auth: 401" in p["blocked"] for p in report["partitions"]), report
        assert report["dlq_length"] == 0
        assert auth_errors(metrics_port) >= stack.partitions
        code, reason = healthz(metrics_port)
        assert code == 503 and reason.startswith("OpenSearch failing for"), reason
        assert "refuses writes (auth): 401" in reason
        assert proxy.refused > 2 * stack.partitions  # it kept trying, with backoff
        log = consumer.log()
        assert "OpenSearch refuses writes (auth): 401 security_exception" in log
        assert "check OS_USER / OS_PASSWORD" in log
        assert log.count("OpenSearch refuses writes (auth)") == 1  # once a minute, not per retry
        proxy.set_unauthorized(False)  # the new password is deployed
        await wait_for(lambda: _outstanding_is(stack, 0), 30, "the blocked changes synced")
        await wait_for(lambda: _blocked_nowhere(env), 30, "blocked status cleared")
        assert healthz(metrics_port) == (200, "ok")
    finally:
        consumer.ensure_dead()
        proxy.close()
    assert await stack.dead_letters() == []
    assert sorted(await stack.documents()) == sorted(key for key, _ in orders(0, 50))
    assert "OpenSearch accepts writes to partition" in consumer.log()


def healthz(port: int) -> tuple[int, str]:
    """The consumer's /healthz: status and its one-line reason."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()


async def _outstanding_is(stack: Stack, count: int) -> bool:
    return await stack.outstanding() == count


async def _blocked_everywhere(env: dict[str, str], partitions: int) -> bool:
    report = status(env)
    return sum(1 for p in report["partitions"] if p.get("blocked")) == partitions


async def _blocked_nowhere(env: dict[str, str]) -> bool:
    return not any(p.get("blocked") for p in status(env)["partitions"])


async def test_a_consumer_started_with_a_wrong_password_names_opensearch_and_the_setting(
    stack: Stack, tmp_path: Path
) -> None:
    """At start the consumer bootstraps its index; a 401 there is retried, and the log
    line says which service refused and which settings to check."""
    proxy = HttpProxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    proxy.start()
    proxy.set_unauthorized(True)
    env = stack.consumer_env(OS_PORT=proxy.port, RETRY_MAX_BACKOFF=0.5, OS_PASSWORD="wrong",
                             OS_USER="searchsync")  # fmt: skip
    consumer = ConsumerProcess(env, "cons-start-401", tmp_path)
    try:
        await wait_for(
            lambda: _logged(consumer, "Could not bootstrap the index"), 30, "the retry line"
        )
        log = consumer.log()
        assert (
            f"OpenSearch at {stack.env['OS_HOST']}:{proxy.port} refused the login (401): "
            "check OS_USER and OS_PASSWORD" in log
        ), log
        assert "wrong" not in log  # never the password
        proxy.set_unauthorized(False)
        await wait_for(lambda: _logged(consumer, "Consumer cons-start-401 started"), 30, "start")
    finally:
        consumer.ensure_dead()
        proxy.close()


async def _logged(consumer: ConsumerProcess, text: str) -> bool:
    return text in consumer.log()
