"""A producer that cannot use Materialize says so: the service, its address, the setting.

Real services: a private emulator (plain text, and one that requires TLS, with a
throwaway CA), a private redis-server, real ``python -m searchsync.producer.main``
processes. Each case starts a producer with one thing wrong — the password, the
sslmode against a plain or a TLS-only server, the port — waits for its retry line and
checks that the line names Materialize with its address and the settings to look at
(like the consumer's "OpenSearch at host:port refused the login (401): check OS_USER and
OS_PASSWORD"), and never the password. Before the fix the line was libpq's alone
(``SUBSCRIBE failed, retrying in 0.2s: connection failed: … FATAL:  invalid password``).
"""

from __future__ import annotations

import secrets

import pytest

from tests.support.producer import ProducerProcess, Stack, stack_fixture
from tests.support.services import free_port
from tests.support.tls import Authority

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PASSWORD = f"mz-{secrets.token_hex(6)}"


stack = stack_fixture(
    orders=3, partitions=2, emulator_env={"MZEMU_PASSWORD": PASSWORD}, scope="module"
)


def _retry_line(process: ProducerProcess) -> str:
    """The producer's first 'retrying' WARNING (the process is killed afterwards)."""
    try:
        process.wait_log("retrying in", timeout=30)
    finally:
        process.kill()
    return next(line for line in process.log().splitlines() if "retrying in" in line)


def test_a_wrong_password_names_materialize_and_the_settings(stack: Stack) -> None:
    wrong = f"wrong-{secrets.token_hex(6)}"
    line = _retry_line(stack.producer(MZ_PASSWORD=wrong))
    where = f"Materialize at {stack.emulator.host}:{stack.emulator.port}"
    assert where in line and "rejected the login" in line, line
    assert "check MZ_USER and MZ_PASSWORD" in line, line
    # the runbook's line is for a refused connection, not a rejected login
    assert "Connection refused to Materialize" not in stack.producers[-1].log()
    assert wrong not in stack.producers[-1].log() and PASSWORD not in stack.producers[-1].log()


def test_ssl_required_against_a_plain_server_names_mz_sslmode(stack: Stack) -> None:
    line = _retry_line(stack.producer(MZ_PASSWORD=PASSWORD, MZ_SSLMODE="verify-full"))
    assert f"Materialize at {stack.emulator.host}:{stack.emulator.port}" in line, line
    assert "MZ_SSLMODE" in line and "does not support SSL" in line, line
    assert PASSWORD not in stack.producers[-1].log()


def test_plain_text_to_a_tls_only_server_names_mz_sslmode() -> None:
    authority = Authority()
    issued = authority.issue("mzemu")
    tls = Stack(
        orders=3,
        partitions=2,
        emulator_env={
            "MZEMU_TLS_CERT": str(issued.cert),
            "MZEMU_TLS_KEY": str(issued.key),
            "MZEMU_PASSWORD": PASSWORD,
        },
    )
    try:
        line = _retry_line(tls.producer(MZ_PASSWORD=PASSWORD, MZ_SSLMODE="disable"))
        assert f"Materialize at {tls.emulator.host}:{tls.emulator.port}" in line, line
        assert "TLS encryption is required" in line and "MZ_SSLMODE" in line, line
        wrong_ca = _retry_line(
            tls.producer(MZ_PASSWORD=PASSWORD, MZ_SSLMODE="verify-full")  # system roots
        )
        assert "certificate verify failed" in wrong_ca and "MZ_SSLROOTCERT" in wrong_ca, wrong_ca
        assert all(PASSWORD not in p.log() for p in tls.producers)
    finally:
        tls.close()
        authority.close()


def test_nothing_listening_names_mz_host_and_mz_port(stack: Stack) -> None:
    port = free_port()
    line = _retry_line(stack.producer(MZ_PASSWORD=PASSWORD, MZ_PORT=str(port)))
    assert f"Materialize at {stack.emulator.host}:{port}" in line, line
    assert "check MZ_HOST and MZ_PORT" in line, line
    assert "[ERROR] Connection refused to Materialize" in stack.producers[-1].log()
