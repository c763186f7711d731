"""Connections to Materialize (MZ_* settings), shared by the producer and the CLI."""

from __future__ import annotations

import re
from typing import Any, Final

import psycopg
from psycopg import sql

from .config import Settings
from .tls import materialize_ssl, warn_once

__all__ = ["CONNECT_TIMEOUT_SECONDS", "connect", "describe_statement", "explain"]

CONNECT_TIMEOUT_SECONDS = 10


async def connect(
    settings: Settings,
    *,
    application_name: str,
    connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
) -> psycopg.AsyncConnection[Any]:
    """An autocommit ``connection_class`` connection to Materialize with MZ_CLUSTER set.

    TLS as MZ_SSLMODE and MZ_SSLROOTCERT say (common.tls.materialize_ssl; a WARNING
    once per process when the certificate is not verified). Waits at most
    CONNECT_TIMEOUT_SECONDS to connect. Raises psycopg.OperationalError when
    Materialize is unreachable, refuses the login or fails the TLS handshake, its
    message :func:`explain`'s line ("Materialize at host:port refused the login: check
    MZ_USER and MZ_PASSWORD: …", libpq's words kept: "certificate verify failed",
    "server does not support SSL"); psycopg.Error when SET CLUSTER fails.
    """
    warn_once(settings, "Materialize")
    sslmode, sslrootcert = materialize_ssl(settings)
    try:
        conn = await _connect(settings, connection_class, application_name, sslmode, sslrootcert)
    except psycopg.OperationalError as error:
        if error.sqlstate:
            raise
        # libpq's words alone name neither the service nor the setting; same class and
        # no SQLSTATE, so callers classify it as before (retried)
        raise psycopg.OperationalError(explain(settings, error)) from error
    try:
        # MZ_CLUSTER is validated as a plain identifier by common.config.
        await conn.execute(sql.SQL("SET CLUSTER = {}").format(sql.SQL(settings.mz_cluster)))
    except BaseException:
        await conn.close()
        raise
    return conn


async def _connect(
    settings: Settings,
    connection_class: type[psycopg.AsyncConnection[Any]],
    application_name: str,
    sslmode: str,
    sslrootcert: str | None,
) -> psycopg.AsyncConnection[Any]:
    return await connection_class.connect(
        host=settings.mz_host,
        port=settings.mz_port,
        user=settings.mz_user,
        password=settings.mz_password,
        dbname=settings.mz_database,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        application_name=application_name,
        # statements are few and simple; named prepared statements would only add state
        prepare_threshold=None,
        sslmode=sslmode,
        sslrootcert=sslrootcert,  # None: left out of the conninfo
    )


# libpq's prefix of every connection failure; the address is said once, our way
_LIBPQ_PREFIX: Final = re.compile(
    r'^(connection failed: )?connection to server at "[^"]*"( \([^)]*\))?, port \d+ failed: '
)
# not "refused": the producer says "Connection refused to Materialize" for that word
_LOGIN = "rejected the login: check MZ_USER and MZ_PASSWORD"
# (what libpq's message says, what it means and which settings to look at), first match wins
_CAUSES: Final = (
    (("password authentication failed", "invalid password"), _LOGIN),
    (("does not support ssl",),
     "does not speak TLS but MZ_SSLMODE requires it: MZ_SSLMODE=disable only if it is "
     "meant to be plain text"),
    (("tls encryption is required", "ssl required", "ssl off"),
     "requires TLS: set MZ_SSLMODE=verify-full (with MZ_SSLROOTCERT for a private CA)"),
    (("certificate verify failed", "ssl error", "root certificate file"),
     "TLS handshake failed: check MZ_SSLROOTCERT and MZ_SSLMODE"),
    (("connection refused", "could not translate host name", "timeout expired",
      "no route to host", "network is unreachable", "name or service not known"),
     "no answer: check MZ_HOST and MZ_PORT"),
)  # fmt: skip
# what to check when a statement fails, by SQLSTATE (the connection is up)
_STATEMENT_HINTS: Final = {
    "42501": "MZ_USER's role needs SELECT on the view and USAGE on its database, schema and "
    'cluster (MZ_CLUSTER): README "Security"',
    "28P01": "check MZ_USER and MZ_PASSWORD",
    "28000": "check MZ_USER and MZ_PASSWORD",
    "3D000": "check MZ_DATABASE",
    "42P01": "check VIEW_NAME and MZ_DATABASE",
}


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def explain(settings: Settings, error: BaseException) -> str:
    """One line for an operator about a failed connection: Materialize's address, what
    went wrong and which settings to look at (a refused login, TLS on one side only, a
    failed certificate check, nothing listening), then libpq's own words. Pure; never
    a password (libpq's and the server's messages hold none)."""
    where = f"Materialize at {settings.mz_host}:{settings.mz_port}"
    detail = _LIBPQ_PREFIX.sub("", _first_line(error))
    lowered = detail.lower()
    cause = next((text for words, text in _CAUSES if any(w in lowered for w in words)), None)
    return f"{where}: {detail}" if cause is None else f"{where} {cause}: {detail}"


def describe_statement(error: psycopg.Error) -> str:
    """One line for a statement Materialize refused (it carries a SQLSTATE): says
    Materialize, the server's message and which setting or grant to check. Pure."""
    first = _first_line(error)
    state = error.sqlstate or ""
    hint = _STATEMENT_HINTS.get(state)
    if hint is None and "unknown cluster" in first.lower():
        hint = "check MZ_CLUSTER"
    text = f"Materialize: {first} (SQLSTATE {state})"
    return f"{text}: {hint}" if hint else text
