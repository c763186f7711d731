"""OS_AUTH=sigv4 for real: searchsync's OpenSearch client signs every request, and a
proxy that recomputes each signature with botocore (tests.support.sigv4) forwards it to
the devstack's OpenSearch node.

Amazon OpenSearch Service cannot run here; what these tests show is that the requests
searchsync sends (index creation, bulk, search with a query string, mget, aliases,
non-ASCII bodies) carry valid SigV4 signatures for the credentials botocore's chain finds in the
environment, that the verifier refuses what it must (no signature, a tampered body, a
wrong secret, a wrong region), and that a refusal is explained naming OpenSearch and
the settings, never the secret key. In-process, so ``scripts/test-lowest`` runs it on
the lowest botocore too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth  # type: ignore[import-untyped,unused-ignore]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped,unused-ignore]
from botocore.credentials import Credentials  # type: ignore[import-untyped,unused-ignore]
from opensearchpy import AsyncOpenSearch, AuthorizationException

from devstack.env import devstack_env
from searchsync.common.config import Settings, load_settings
from searchsync.common.errors import FatalError
from searchsync.common.opensearch import explain, make_client
from tests.support.sigv4 import MISMATCH, SigV4Proxy
from tests.support.tls import Authority, authorities

__all__ = ["authorities"]  # the module-scoped fixture, used below

pytestmark = pytest.mark.timeout(120)

REGION = "eu-west-1"
ACCESS_KEY = "AKIASEARCHSYNCTEST01"
SECRET = f"secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def proxy(authorities: tuple[Authority, Authority]) -> Iterator[SigV4Proxy]:
    services = devstack_env()
    server = SigV4Proxy(
        services["OS_HOST"], int(services["OS_PORT"]), authorities[0], {ACCESS_KEY: SECRET},
        region=REGION,
    )  # fmt: skip
    server.start()
    yield server
    server.close()


def sigv4_settings(proxy: SigV4Proxy, authority: Authority, **overrides: str) -> Settings:
    return load_settings(
        {
            "OS_HOST": "127.0.0.1",
            "OS_PORT": str(proxy.port),
            "OS_USE_SSL": "true",
            "OS_CA_CERTS": str(authority.cert),
            "OS_AUTH": "sigv4",
            "OS_AWS_REGION": REGION,
            **overrides,
        }
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """botocore's chain finds exactly these credentials: no files, no instance role."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


@pytest.fixture
async def client(
    proxy: SigV4Proxy, authorities: tuple[Authority, Authority], aws_env: None
) -> AsyncIterator[AsyncOpenSearch]:
    search = make_client(sigv4_settings(proxy, authorities[0]))
    yield search
    await search.close()


async def test_every_request_searchsync_sends_is_signed_and_verified(
    proxy: SigV4Proxy, client: AsyncOpenSearch
) -> None:
    index = f"test_sigv4_{uuid.uuid4().hex[:10]}"
    before_verified, before_rejected = proxy.verified, proxy.rejected
    try:
        assert "version" in await client.info()
        await client.indices.create(index=index, body={"settings": {"number_of_replicas": 0}})
        lines: list[dict[str, Any]] = []
        for n in range(20):
            lines += [{"index": {"_index": index, "_id": f"order:{n}"}},
                      {"order_id": f"order:{n}", "customer_name": "Zoë Ångström ✓"}]  # fmt: skip
        bulk = await client.bulk(body=lines, params={"refresh": "true"})
        assert bulk["errors"] is False
        found = await client.search(
            index=index, params={"q": "customer_name:Zoë", "size": "5", "track_total_hits": "true"}
        )
        assert found["hits"]["total"]["value"] == 20
        # ids travel in bodies (bulk, mget), never in a URL path: opensearch-py 2.6's
        # async connection re-quotes a path after signing ("order%3A7" sent as
        # "order:7"), which AWS, like tests.support.sigv4, refuses; 3.2 does not
        got = await client.mget(index=index, body={"ids": ["order:7", "order:8"]})
        assert [doc["_source"]["order_id"] for doc in got["docs"]] == ["order:7", "order:8"]
        await client.bulk(
            body=[{"delete": {"_index": index, "_id": "order:7"}}], params={"refresh": "true"}
        )
        await client.indices.put_alias(index=index, name=f"{index}_alias")
        assert index in await client.indices.get_alias(name=f"{index}_alias")
        assert (await client.count(index=index))["count"] == 19
    finally:
        await client.indices.delete(index=index, params={"ignore_unavailable": "true"})
    assert proxy.rejected == before_rejected, proxy.reasons
    assert proxy.verified - before_verified >= 8  # every request above went through the check


def _raw_request(
    proxy: SigV4Proxy, authority: Authority, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(authority.cert))
    request = urllib.request.Request(
        f"https://127.0.0.1:{proxy.port}/_search", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _signed_headers(
    proxy: SigV4Proxy, body: bytes, secret: str = SECRET, *, content_hash: bool = True
) -> dict[str, str]:
    aws = AWSRequest(
        method="POST",
        url=f"https://127.0.0.1:{proxy.port}/_search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    if content_hash:
        aws.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(Credentials(ACCESS_KEY, secret), "es", REGION).add_auth(aws)
    return dict(aws.headers.items())


def test_the_verifier_refuses_what_amazon_refuses(
    proxy: SigV4Proxy, authorities: tuple[Authority, Authority]
) -> None:
    """The check can fail: without this, a proxy forwarding everything would pass above."""
    body = b'{"size": 0}'
    status, answer = _raw_request(proxy, authorities[0], _signed_headers(proxy, body), body)
    assert status == 200, answer  # a request botocore signed passes
    unsigned = {"Content-Type": "application/json"}
    assert _raw_request(proxy, authorities[0], unsigned, body)[0] == 403
    tampered = _raw_request(proxy, authorities[0], _signed_headers(proxy, body), b'{"size":1}')
    assert tampered[0] == 403 and "x-amz-content-sha256" in tampered[1]["message"], tampered
    headers = _signed_headers(proxy, body, content_hash=False)  # the signature covers the body
    assert _raw_request(proxy, authorities[0], headers, b'{"size":1}') == (
        403,
        {"message": MISMATCH},
    )
    wrong = _raw_request(proxy, authorities[0], _signed_headers(proxy, body, "nope"), body)
    assert wrong == (403, {"message": MISMATCH})
    old = _signed_headers(proxy, body)
    stale = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).strftime("%Y%m%dT%H%M%SZ")
    old["X-Amz-Date"] = stale
    assert _raw_request(proxy, authorities[0], old, body)[0] == 403


async def test_a_wrong_secret_or_region_is_refused_and_explained_without_the_secret(
    proxy: SigV4Proxy,
    authorities: tuple[Authority, Authority],
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    for settings in (
        sigv4_settings(proxy, authorities[0]),
        sigv4_settings(proxy, authorities[0], OS_AWS_REGION="us-east-1"),
    ):
        search = make_client(settings)
        try:
            with pytest.raises(AuthorizationException) as raised:
                await search.info()
        finally:
            await search.close()
        line = explain(settings, raised.value)
        assert line.startswith(f"OpenSearch at 127.0.0.1:{proxy.port} refused the signed")
        assert "AWS_SECRET_ACCESS_KEY" in line and "OS_AWS_REGION" in line, line
        assert wrong_secret not in line and SECRET not in line
    assert any(reason.startswith(MISMATCH) for reason in proxy.reasons)
    assert any("us-east-1" not in r and "eu-west-1/es" in r for r in proxy.reasons)


def test_no_credentials_or_an_unknown_profile_stops_with_a_line_that_says_so(
    proxy: SigV4Proxy,
    authorities: tuple[Authority, Authority],
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(FatalError, match="found no AWS credentials"):
        make_client(sigv4_settings(proxy, authorities[0]))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(FatalError, match=r"could not be loaded.*no-such-profile"):
        make_client(sigv4_settings(proxy, authorities[0]))


def test_the_cli_without_credentials_says_so_in_one_line_and_exits_2() -> None:
    """The operator CLI meets the same FatalError: one line naming OS_AUTH, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "OS_AUTH": "sigv4", "OS_USE_SSL": "true", "OS_AWS_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "searchsync", "index", "mapping-diff"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "searchsync: OS_AUTH=sigv4: botocore found no AWS credentials (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a container or instance role)"
    ]
