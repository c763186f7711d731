"""OpenSearch over HTTPS with basic authentication, through the CLI as a process.

The devstack node is built from Maven artifacts without the security plugin, so a
TLS-terminating proxy with basic auth (tests.support.tls.BasicAuthProxy, answering a
bad login with the plugin's 401) stands in front of it. `searchsync index create`
over it works; a wrong CA, a wrong password and plain HTTP to the HTTPS port each fail
within seconds naming OpenSearch and the setting to check, never the password; the
default verifies (certifi's roots do not know the test CA); OS_VERIFY_CERTS=false
works and says so at WARNING."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opensearchpy import OpenSearch

from tests.support.consumer import service_env
from tests.support.tls import Authority, BasicAuthProxy, authorities, run_cli

USER, PASSWORD = "searchsync", "os-Secret-9"

__all__ = ["authorities"]  # the fixture, from tests.support.tls


@pytest.fixture(scope="module")
def proxy(authorities: tuple[Authority, Authority]) -> Iterator[BasicAuthProxy]:
    services = service_env()
    server = BasicAuthProxy(
        services["OS_HOST"], int(services["OS_PORT"]), authorities[0], USER, PASSWORD
    )
    server.start()
    yield server
    server.close()


@pytest.fixture
def alias() -> Iterator[str]:
    name = f"test_tls_{uuid.uuid4().hex[:10]}"
    yield name
    services = service_env()
    node = OpenSearch(hosts=[{"host": services["OS_HOST"], "port": int(services["OS_PORT"])}])
    node.indices.delete(index=f"{name}_v*", ignore=[404])
    node.close()


def index_create(
    proxy: BasicAuthProxy, alias: str, ca: Authority, **overrides: str
) -> tuple[int, str]:
    env = {
        "OS_HOST": "127.0.0.1",
        "OS_PORT": str(proxy.port),
        "OS_USE_SSL": "true",
        "OS_CA_CERTS": str(ca.cert),
        "OS_USER": USER,
        "OS_PASSWORD": PASSWORD,
        "OS_INDEX_NAME": alias,
        "OS_TIMEOUT_SECONDS": "10",
        **overrides,
    }
    result = run_cli(env, "index", "create", timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_index_create_over_https_with_basic_auth(
    proxy: BasicAuthProxy, alias: str, authorities: tuple[Authority, Authority]
) -> None:
    code, out = index_create(proxy, alias, authorities[0])
    assert code == 0, out
    assert f"alias {alias} -> {alias}_v1" in out
    assert proxy.forwarded > 0 and "WARNING" not in out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "refused the login (401): check OS_USER and OS_PASSWORD"),
        ("wrong CA", "TLS handshake failed"),
        ("default roots", "TLS handshake failed"),
        ("plain HTTP to the HTTPS port", "OS_USE_SSL=true if it is one"),
    ],
)
def test_failures_name_opensearch_and_never_the_password(
    proxy: BasicAuthProxy,
    alias: str,
    authorities: tuple[Authority, Authority],
    case: str,
    expected: str,
) -> None:
    right, wrong = authorities
    overrides = {
        "wrong password": {"OS_PASSWORD": "not-" + PASSWORD},
        "wrong CA": {"OS_CA_CERTS": str(wrong.cert)},
        "default roots": {"OS_CA_CERTS": ""},
        "plain HTTP to the HTTPS port": {"OS_USE_SSL": "false", "OS_CA_CERTS": ""},
    }[case]
    code, out = index_create(proxy, alias, right, **overrides)
    assert code == 3, out
    assert f"OpenSearch at 127.0.0.1:{proxy.port}" in out and expected in out, out
    assert PASSWORD not in out


def test_verification_off_only_when_asked_and_warned(
    proxy: BasicAuthProxy, alias: str, authorities: tuple[Authority, Authority]
) -> None:
    code, out = index_create(proxy, alias, authorities[1], OS_CA_CERTS="", OS_VERIFY_CERTS="false")
    assert code == 0, out
    assert "OpenSearch: TLS certificate verification is off (OS_VERIFY_CERTS=false)" in out


def test_client_certificate_when_the_server_requires_one(
    alias: str, authorities: tuple[Authority, Authority]
) -> None:
    right = authorities[0]
    services = service_env()
    mutual = BasicAuthProxy(
        services["OS_HOST"],
        int(services["OS_PORT"]),
        right,
        USER,
        PASSWORD,
        client_certificates=True,
    )
    mutual.start()
    try:
        client = right.issue("searchsync-client")
        mine = {"OS_CLIENT_CERT": str(client.cert), "OS_CLIENT_KEY": str(client.key)}
        code, out = index_create(mutual, alias, right, **mine)
        assert code == 0, out
        code, out = index_create(mutual, alias, right)  # no certificate: refused
        assert code == 3, out
        assert f"OpenSearch at 127.0.0.1:{mutual.port}" in out and PASSWORD not in out
    finally:
        mutual.close()
