"""A real consumer with OS_AUTH=sigv4 syncs through a proxy that verifies every signature.

Services: the devstack's Redis and OpenSearch node, and tests.support.sigv4's HTTPS
proxy in front of the node (Amazon OpenSearch Service's check: each request's SigV4
signature recomputed with botocore from the proxy's own copy of the credentials, 403
otherwise). A real ``python -m searchsync.consumer.main`` gets its credentials the way
it would on AWS without a role: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its
environment. It bootstraps the index and syncs upserts and deletes with zero drift and
no refused request; with a wrong secret key it says, within seconds, that OpenSearch
refused the signed request and which settings to check, and never prints the secret.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.consumer import ConsumerProcess, Stack, orders, stack_fixture, wait_for
from tests.support.sigv4 import SigV4Proxy
from tests.support.tls import Authority, authorities

__all__ = ["authorities"]  # the module-scoped fixture, used below

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REGION = "eu-central-1"
ACCESS_KEY = "AKIASEARCHSYNCE2E001"
SECRET = f"e2e-secret-{uuid.uuid4().hex}"


stack = stack_fixture(partitions=2)


@pytest.fixture
def proxy(stack: Stack, authorities: tuple[Authority, Authority]) -> Iterator[SigV4Proxy]:
    """The verifying proxy in front of the devstack node, knowing ACCESS_KEY's SECRET."""
    proxy = SigV4Proxy(
        stack.env["OS_HOST"], int(stack.env["OS_PORT"]), authorities[0], {ACCESS_KEY: SECRET},
        region=REGION,
    )  # fmt: skip
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


def sigv4_env(stack: Stack, proxy: SigV4Proxy, ca: Authority, secret: str) -> dict[str, str]:
    return stack.consumer_env(
        OS_HOST="127.0.0.1", OS_PORT=proxy.port, OS_USE_SSL="true", OS_CA_CERTS=ca.cert,
        OS_AUTH="sigv4", OS_AWS_REGION=REGION, OS_USER="", OS_PASSWORD="",
        # not AWS_PROFILE="": botocore takes an empty profile name for one (ProfileNotFound)
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret,
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        AWS_EC2_METADATA_DISABLED="true", RETRY_MAX_BACKOFF=0.5, LOG_LEVEL="INFO",
    )  # fmt: skip


def signed_orders(start: int, count: int) -> list[tuple[str, dict[str, Any] | None]]:
    """Orders whose bodies are not ASCII: the signature covers their UTF-8 bytes."""
    return orders(start, count, status=None, customer_name="Zoë ✓")


async def _synced(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def test_a_sigv4_consumer_syncs_through_the_verifying_proxy(
    stack: Stack, proxy: SigV4Proxy, tmp_path: Path, authorities: tuple[Authority, Authority]
) -> None:
    env = sigv4_env(stack, proxy, authorities[0], SECRET)
    consumer = ConsumerProcess(env, "cons-sigv4", tmp_path)
    t = int(time.time() * 1000)
    try:
        await stack.write(t, signed_orders(0, 60))
        await stack.write(t + 1, [(key, None) for key, _ in signed_orders(0, 10)])  # deletes
        await stack.write(t + 2, signed_orders(60, 20))
        await stack.progress(t + 3)
        await _or_log(consumer, wait_for(lambda: _synced(stack), 60, "every entry acknowledged"))
    finally:
        consumer.ensure_dead()
    log = consumer.log()
    assert SECRET not in log
    assert proxy.rejected == 0, proxy.reasons
    assert proxy.verified > 0
    sent = enumerate(signed_orders(0, 80))
    expected = {key: {**doc, "sync_version": t + (2 if n >= 60 else 0)}
                for n, (key, doc) in sent if n >= 10 and doc}  # fmt: skip
    documents = await stack.documents()
    assert {key: {k: v for k, v in doc.items() if k != "_version"}
            for key, doc in documents.items()} == expected  # fmt: skip
    assert await stack.dead_letters() == []


async def test_a_wrong_secret_key_fails_fast_naming_opensearch_never_the_secret(
    stack: Stack, proxy: SigV4Proxy, tmp_path: Path, authorities: tuple[Authority, Authority]
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = sigv4_env(stack, proxy, authorities[0], wrong)
    consumer = ConsumerProcess(env, "cons-sigv4-bad", tmp_path)
    try:  # "fast": within wait_for's 30 s
        line = wait_for(lambda: _logged(consumer, "refused the signed request"), 30, "the line")
        await _or_log(consumer, line)
    finally:
        consumer.ensure_dead()
    log = consumer.log()
    assert f"OpenSearch at 127.0.0.1:{proxy.port} refused the signed request (403)" in log, log
    assert "AWS_SECRET_ACCESS_KEY" in log and "OS_AWS_REGION" in log
    assert wrong not in log and SECRET not in log
    assert proxy.verified == 0 and proxy.rejected > 0


async def test_no_credentials_stops_the_consumer_saying_so(
    stack: Stack, tmp_path: Path, authorities: tuple[Authority, Authority]
) -> None:
    proxy = SigV4Proxy("127.0.0.1", 9, authorities[0], {}, region=REGION)
    proxy.port = 9  # never started: the consumer stops before its first request
    env = sigv4_env(stack, proxy, authorities[0], "")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    consumer = ConsumerProcess(env, "cons-sigv4-none", tmp_path)
    try:
        assert consumer.wait(30) == 1
    finally:
        consumer.ensure_dead()
    assert "Consumer cannot continue: OS_AUTH=sigv4: botocore found no AWS credentials" in (
        consumer.log()
    )


async def _or_log(consumer: ConsumerProcess, waiting: Awaitable[object]) -> None:
    try:
        await waiting
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- consumer log ---\n{consumer.log()[-3000:]}") from None


async def _logged(consumer: ConsumerProcess, text: str) -> bool:
    return text in consumer.log()
