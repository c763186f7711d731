"""Materialize failures in one line that names the service, its address and the setting.

Pure: the messages are libpq's and Materialize's own, as the real processes saw them
(tests/faults/test_producer_materialize_errors.py runs them against the emulator).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from searchsync.common.config import load_settings
from searchsync.common.materialize import describe_statement, explain

SETTINGS = load_settings({"MZ_HOST": "mz.example", "MZ_PORT": "6875", "MZ_PASSWORD": "s3cret"})
PREFIX = 'connection failed: connection to server at "10.0.0.6", port 6875 failed: '


@pytest.mark.parametrize(
    ("libpq", "expected"),
    [
        ("FATAL:  invalid password", "rejected the login: check MZ_USER and MZ_PASSWORD"),
        ('FATAL:  password authentication failed for user "x"', "check MZ_USER and MZ_PASSWORD"),
        ("server does not support SSL, but SSL was required", "MZ_SSLMODE requires it"),
        ("FATAL:  TLS encryption is required", "requires TLS: set MZ_SSLMODE=verify-full"),
        ("SSL error: certificate verify failed", "check MZ_SSLROOTCERT and MZ_SSLMODE"),
        ("Connection refused", "no answer: check MZ_HOST and MZ_PORT"),
        ("timeout expired", "no answer: check MZ_HOST and MZ_PORT"),
    ],
)
def test_a_failed_connection_names_materialize_and_the_setting(libpq: str, expected: str) -> None:
    line = explain(SETTINGS, psycopg.OperationalError(PREFIX + libpq + "\nmore context"))
    assert line.startswith("Materialize at mz.example:6875 "), line
    assert expected in line and line.endswith(libpq), line  # libpq's words kept, said once
    assert "10.0.0.6" not in line and "s3cret" not in line


def test_an_unknown_failure_keeps_the_address_and_the_words() -> None:
    line = explain(SETTINGS, psycopg.OperationalError(PREFIX + "something new"))
    assert line == "Materialize at mz.example:6875: something new"


def test_a_refused_statement_says_materialize_and_what_to_check() -> None:
    denied = errors.lookup("42501")(
        'permission denied for MATERIALIZED VIEW "materialize.public.orders_search_source_mv"'
    )
    line = describe_statement(denied)
    assert line.startswith("Materialize: permission denied for MATERIALIZED VIEW"), line
    assert "(SQLSTATE 42501)" in line and "needs SELECT on the view and USAGE" in line, line
    assert "check MZ_CLUSTER" in describe_statement(
        errors.lookup("XX000")("unknown cluster 'nope'")
    )
    assert describe_statement(errors.lookup("3D000")("x")).endswith("check MZ_DATABASE")
