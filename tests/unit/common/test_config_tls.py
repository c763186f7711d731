"""TLS and authentication settings: defaults, contradictions, SigV4 without botocore, and
what common.tls and the client factories make of them (no connection is opened)."""

from __future__ import annotations

import importlib.util
import logging
import ssl
from typing import Any

import pytest

from searchsync.common import tls
from searchsync.common.config import (
    EXIT_CONFIG,
    ConfigError,
    load_settings,
    settings_or_exit,
)
from searchsync.common.opensearch import make_client
from searchsync.common.redis_client import connect_redis

A_FILE = __file__
SIGV4 = {"OS_AUTH": "sigv4", "OS_USE_SSL": "true", "OS_AWS_REGION": "eu-west-1"}


def test_defaults_verify_every_certificate() -> None:
    settings = load_settings({})
    assert settings.mz_sslmode == "verify-full"
    assert tls.materialize_ssl(settings) == ("verify-full", "system")
    assert settings.os_verify_certs is True
    assert settings.os_auth == "basic"
    for service in ("Materialize", "OpenSearch", "Redis"):
        assert tls.unverified_warning(settings, service) is None


def test_materialize_root_certificate_and_modes() -> None:
    assert tls.materialize_ssl(load_settings({"MZ_SSLROOTCERT": A_FILE})) == (
        "verify-full",
        A_FILE,
    )
    assert tls.materialize_ssl(load_settings({"MZ_SSLMODE": "disable"})) == ("disable", None)
    # libpq takes "system" roots only with verify-full: verify-ca needs a file
    with pytest.raises(ConfigError, match="MZ_SSLROOTCERT"):
        load_settings({"MZ_SSLMODE": "verify-ca"})
    assert tls.materialize_ssl(
        load_settings({"MZ_SSLMODE": "verify-ca", "MZ_SSLROOTCERT": A_FILE})
    ) == ("verify-ca", A_FILE)


@pytest.mark.parametrize("mode", ["allow", "prefer", "require"])
def test_unverified_materialize_tls_is_warned(mode: str) -> None:
    message = tls.unverified_warning(load_settings({"MZ_SSLMODE": mode}), "Materialize")
    assert message is not None and f"MZ_SSLMODE={mode}" in message


def test_unverified_opensearch_and_redis_are_warned() -> None:
    settings = load_settings({"OS_USE_SSL": "true", "OS_VERIFY_CERTS": "false"})
    assert "OS_VERIFY_CERTS=false" in str(tls.unverified_warning(settings, "OpenSearch"))
    # without TLS there is no certificate to skip
    plain = load_settings({"OS_VERIFY_CERTS": "false"})
    assert tls.unverified_warning(plain, "OpenSearch") is None
    url = "rediss://u:hunter2@redis:6380/0?ssl_cert_reqs=none"
    message = tls.unverified_warning(load_settings({"REDIS_URL": url}), "Redis")
    assert message is not None and "hunter2" not in message


def test_warning_is_logged_once_per_service(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_warned", set())
    settings = load_settings({"OS_USE_SSL": "true", "OS_VERIFY_CERTS": "false"})
    with caplog.at_level(logging.WARNING, logger="searchsync.common.tls"):
        make_client(settings)
        make_client(settings)
    warnings = [r for r in caplog.records if "OS_VERIFY_CERTS=false" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def _ssl_context(settings: Any) -> ssl.SSLContext:
    transport = make_client(settings).transport  # connects lazily: build its connection
    connection = transport.connection_class(**transport.hosts[0], **transport.kwargs)
    context: ssl.SSLContext = getattr(connection, "_ssl_context")  # noqa: B009
    return context


def test_opensearch_client_verifies_by_default_and_only_off_when_asked() -> None:
    verified = _ssl_context(load_settings({"OS_USE_SSL": "true"}))
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    off = _ssl_context(load_settings({"OS_USE_SSL": "true", "OS_VERIFY_CERTS": "false"}))
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_redis_ca_file_reaches_the_tls_connection() -> None:
    client = connect_redis(
        load_settings({"REDIS_URL": "rediss://u:p@redis:6380/0", "REDIS_CA_CERTS": A_FILE})
    )
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == A_FILE
    assert kwargs.get("ssl_cert_reqs", "required") == "required"


def test_sigv4_without_botocore_exits_2_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "botocore" else real(name)
    )
    with pytest.raises(SystemExit) as info:
        settings_or_exit(SIGV4)
    assert info.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "OS_AUTH='sigv4'" in err and "pip install 'searchsync[aws]'" in err


def test_sigv4_with_botocore_needs_region_https_and_no_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert load_settings(SIGV4).os_aws_service == "es"
    for variable, extra in [
        ("OS_AWS_REGION", {"OS_AWS_REGION": ""}),
        ("OS_USE_SSL", {"OS_USE_SSL": "false"}),
        ("OS_USER", {"OS_USER": "admin"}),
    ]:
        with pytest.raises(ConfigError) as error:
            load_settings({**SIGV4, **extra})
        assert error.value.variable == variable


def test_paths_are_not_secrets_but_passwords_stay_hidden() -> None:
    settings = load_settings(
        {"REDIS_URL": "rediss://svc:hunter2@redis:6380/0", "REDIS_CA_CERTS": A_FILE}
    )
    shown = settings.redacted()
    assert shown["REDIS_CA_CERTS"] == A_FILE and "hunter2" not in str(shown)
