"""Redis over TLS with an ACL user, through the product's client (the CLI as a process):
it works; a wrong CA, a wrong password and plain text to the TLS port each fail within
seconds naming Redis and its address, never the password; verification is on unless
the URL turns it off, which is logged as a WARNING."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.tls import Authority, TlsRedis, authorities, run_cli

PASSWORD = f"pw-{secrets.token_hex(8)}"
USER = "searchsync_tls"

__all__ = ["authorities"]  # the fixture, from tests.support.tls


@pytest.fixture(scope="module")
def redis(authorities: tuple[Authority, Authority]) -> Iterator[TlsRedis]:
    server = TlsRedis(authorities[0], {USER: (PASSWORD, "~searchsync:* +@all")})
    server.start()
    yield server
    server.close()


def status(env: dict[str, str]) -> tuple[int, str]:
    result = run_cli({"VIEW_NAME": "tls_redis_view", **env}, "status", "--json", timeout=30)
    return result.returncode, result.stderr


def test_status_over_tls_as_the_acl_user(
    redis: TlsRedis, authorities: tuple[Authority, Authority]
) -> None:
    code, err = status(
        {"REDIS_URL": redis.url_for(USER, PASSWORD), "REDIS_CA_CERTS": str(authorities[0].cert)}
    )
    assert code == 0, err
    assert "WARNING" not in err


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "invalid username-password pair"),
        ("wrong CA", "certificate verify failed"),
        ("system roots only", "certificate verify failed"),
        ("plain text to the TLS port", "rediss:// if it is one"),
    ],
)
def test_failures_name_redis_and_never_the_password(
    redis: TlsRedis, authorities: tuple[Authority, Authority], case: str, expected: str
) -> None:
    right, wrong = authorities
    env = {"REDIS_URL": redis.url_for(USER, PASSWORD), "REDIS_CA_CERTS": str(right.cert)}
    if case == "wrong password":
        env["REDIS_URL"] = redis.url_for(USER, "not-" + PASSWORD)
    elif case == "wrong CA":
        env["REDIS_CA_CERTS"] = str(wrong.cert)
    elif case == "system roots only":
        env["REDIS_CA_CERTS"] = ""  # verification on by default: our CA is not trusted
    else:
        env = {"REDIS_URL": env["REDIS_URL"].replace("rediss://", "redis://", 1)}
    code, err = status(env)  # each connect waits at most 5 s: run_cli's 30 s bounds it
    assert code == 3, err
    assert f"Redis at 127.0.0.1:{redis.port}" in err and expected in err, err
    assert PASSWORD not in err


def test_verification_off_only_when_asked_and_warned(
    redis: TlsRedis, authorities: tuple[Authority, Authority]
) -> None:
    url = redis.url_for(USER, PASSWORD) + "?ssl_cert_reqs=none&ssl_check_hostname=false"
    code, err = status({"REDIS_URL": url, "REDIS_CA_CERTS": str(authorities[1].cert)})
    assert code == 0, err
    assert "Redis: TLS certificate verification is off" in err  # logged at WARNING
    assert PASSWORD not in err
