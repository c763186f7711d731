"""MZEMU_PG_DSN's TLS parameters: checked at start (exit 2 naming the variable, the DSN
never echoed), read by the pass-through link as libpq reads them, and named in errors."""

from __future__ import annotations

import pytest

from devstack.mzemu.backend import LinkParams, link_params, postgres_failure
from devstack.mzemu.config import ConfigError, load_config

TLS_DSN = "postgresql://u:Secret-9@db.example:5433/d?sslmode=verify-full&sslrootcert=/ca.pem"


def test_a_verify_full_dsn_is_kept_as_given() -> None:
    assert load_config({"MZEMU_PG_DSN": TLS_DSN}).pg_dsn == TLS_DSN


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MZEMU_PG_DSN": TLS_DSN.replace("verify-full", "verify_full")}, "sslmode 'verify_full'"),
        ({"MZEMU_PG_DSN": "", "PGSSLMODE": "strict"}, "sslmode 'strict'"),
        ({"MZEMU_PG_DSN": TLS_DSN + "&sslmdoe=require"}, "expected a libpq connection string"),
        ({"MZEMU_PG_DSN": "host=db password=Secret-9 oops"}, "expected a libpq connection string"),
    ],
)
def test_a_bad_dsn_names_the_variable_never_the_password(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=r"^MZEMU_PG_DSN: ") as bad:
        load_config(env)
    assert words in str(bad.value) and "Secret-9" not in str(bad.value)


def test_the_link_reads_the_tls_parameters_from_the_dsn_then_pg_variables() -> None:
    params = link_params(TLS_DSN, {"PGSSLMODE": "disable"}, "s")
    assert (params.host, params.port, params.sslmode, params.sslrootcert) == (
        "db.example", 5433, "verify-full", "/ca.pem",
    )  # fmt: skip
    from_env = link_params("host=db", {"PGSSLMODE": "require", "PGSSLROOTCERT": "/r.pem"}, "s")
    assert (from_env.sslmode, from_env.sslrootcert) == ("require", "/r.pem")
    assert link_params("host=db", {}, "s").sslmode == "prefer"  # libpq's default


def test_a_failure_names_postgresql_and_what_to_check() -> None:
    params = LinkParams("db", 5433, "u", "d", "Secret-9", "s", sslmode="verify-full")
    cert = postgres_failure(params, "SSL error: certificate verify failed")
    assert cert.startswith("PostgreSQL at db:5433: SSL error: certificate verify failed")
    assert "sslmode=verify-full" in cert and "sslrootcert" in cert and "Secret-9" not in cert
    plain = postgres_failure(params, 'FATAL:  no pg_hba.conf entry for host "x", no encryption')
    assert "it takes TLS only" in plain
    assert (
        postgres_failure(params, "Connection refused")
        == "PostgreSQL at db:5433: Connection refused"
    )
