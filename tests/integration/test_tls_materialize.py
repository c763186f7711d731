"""Materialize over TLS: the emulator terminates pgwire TLS as Materialize does (SSLRequest,
then the handshake; plain text refused). Through common.materialize.connect and the CLI
as a process: verify-full against the right CA works; a wrong CA, a wrong password and
plain text to the TLS port each fail within seconds naming Materialize, never the
password; the default verifies (system roots do not know the test CA); a mode that
skips verification works and says so at WARNING."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from searchsync.common import materialize
from searchsync.common.config import load_settings
from tests.support.consumer import service_env
from tests.support.mzemu import Emulator, create_schema, drop_schema, start_emulator
from tests.support.tls import Authority, authorities, run_cli

PASSWORD = "mz-Secret-7"

__all__ = ["authorities"]  # the fixture, from tests.support.tls


@pytest.fixture(scope="module")
def emulator(authorities: tuple[Authority, Authority]) -> Iterator[Emulator]:
    issued = authorities[0].issue("mzemu")
    schema = create_schema(orders=2)
    tls = {
        "MZEMU_TLS_CERT": str(issued.cert),
        "MZEMU_TLS_KEY": str(issued.key),
        "MZEMU_PASSWORD": PASSWORD,
    }
    server = start_emulator(schema, env=tls)
    yield server
    server.close()
    drop_schema(schema)


def mz_env(emulator: Emulator, ca: Authority, **overrides: str) -> dict[str, str]:
    return {
        "MZ_HOST": "127.0.0.1",
        "MZ_PORT": str(emulator.port),
        "MZ_PASSWORD": PASSWORD,
        "MZ_SSLMODE": "verify-full",
        "MZ_SSLROOTCERT": str(ca.cert),
        **overrides,
    }


def test_verify_full_against_the_right_ca_is_encrypted(
    emulator: Emulator, authorities: tuple[Authority, Authority]
) -> None:
    settings = load_settings(mz_env(emulator, authorities[0]))

    async def read() -> tuple[bool, object]:
        conn = await materialize.connect(settings, application_name="test-tls")
        try:
            row = await (
                await conn.execute("SELECT count(*) FROM orders_search_source_mv")
            ).fetchone()
            return conn.pgconn.ssl_in_use, row
        finally:
            await conn.close()

    encrypted, row = asyncio.run(read())
    assert encrypted and row == (2,)


def wait_now(env: dict[str, str]) -> tuple[int, str]:
    """``searchsync wait --now``: reads mz_now() from Materialize first (then Redis)."""
    services = service_env()
    result = run_cli(
        {"REDIS_URL": services["REDIS_URL"], "VIEW_NAME": "tls_mz_view", **env},
        "wait", "--now", "--timeout", "1",
        timeout=40,
    )  # fmt: skip
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "invalid password"),
        ("wrong CA", "certificate verify failed"),
        ("system roots (the default)", "certificate verify failed"),
        ("plain text to the TLS port", "TLS encryption is required"),
    ],
)
def test_failures_name_materialize_and_never_the_password(
    emulator: Emulator, authorities: tuple[Authority, Authority], case: str, expected: str
) -> None:
    right, wrong = authorities
    env = mz_env(emulator, right)
    if case == "wrong password":
        env["MZ_PASSWORD"] = "not-" + PASSWORD
    elif case == "wrong CA":
        env["MZ_SSLROOTCERT"] = str(wrong.cert)
    elif case.startswith("system roots"):
        # empty = the default; set, not deleted, so that a MZ_SSLMODE=disable of the
        # process environment (`source .devstack/env`, as ./scripts/test does) is not used
        env |= {"MZ_SSLMODE": "", "MZ_SSLROOTCERT": ""}
    else:
        env |= {"MZ_SSLMODE": "disable", "MZ_SSLROOTCERT": ""}
    code, err = wait_now(env)  # libpq's connect_timeout (10 s) bounds each attempt
    assert code == 3, err
    assert "cannot read the view from Materialize" in err and expected in err, err
    assert f"Materialize at 127.0.0.1:{emulator.port}" in err  # common.materialize.explain
    assert PASSWORD not in err


def test_unverified_tls_works_and_is_warned(
    emulator: Emulator, authorities: tuple[Authority, Authority]
) -> None:
    code, err = wait_now(mz_env(emulator, authorities[1], MZ_SSLMODE="require", MZ_SSLROOTCERT=""))
    # exit 1: nothing applied under this view, so the wait times out; Materialize answered
    assert code == 1, err
    assert "Materialize: TLS without certificate verification (MZ_SSLMODE=require)" in err
    assert "cannot read the view" not in err and PASSWORD not in err


def test_a_cancel_request_reaches_a_tls_session(
    emulator: Emulator, authorities: tuple[Authority, Authority]
) -> None:
    # a stop during a FETCH cancels it as producer.subscribe does (cancel_safe): libpq
    # sends the CancelRequest on a new connection, through TLS with this sslmode
    settings = load_settings(mz_env(emulator, authorities[0]))

    async def cancelled_fetch() -> float:
        conn = await materialize.connect(settings, application_name="test-tls-cancel")
        loop = asyncio.get_running_loop()
        try:
            await conn.execute("BEGIN")
            await conn.execute(
                "DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM orders_search_source_mv)"
            )
            await conn.execute("FETCH ALL c")  # the snapshot
            loop.call_later(0.5, lambda: asyncio.ensure_future(conn.cancel_safe(timeout=10)))
            started = loop.time()
            with pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("FETCH ALL c WITH (timeout = '30s')")  # nothing new comes
            return loop.time() - started
        finally:
            await conn.close()

    assert asyncio.run(cancelled_fetch()) < 10
    assert "cancel request for session" in emulator.log()
