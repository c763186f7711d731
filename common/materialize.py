"""Connections to Materialize (MZ_* settings), shared by the producer and the CLI."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .config import Settings
from .tls import materialize_ssl, warn_once

__all__ = ["CONNECT_TIMEOUT_SECONDS", "connect"]

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
    Materialize is unreachable, refuses the login or fails the TLS handshake
    (libpq's message: "certificate verify failed", "server does not support SSL"),
    psycopg.Error when the cluster does not exist.
    """
    warn_once(settings, "Materialize")
    sslmode, sslrootcert = materialize_ssl(settings)
    conn = await connection_class.connect(
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
    try:
        # MZ_CLUSTER is validated as a plain identifier by common.config.
        await conn.execute(sql.SQL("SET CLUSTER = {}").format(sql.SQL(settings.mz_cluster)))
    except BaseException:
        await conn.close()
        raise
    return conn
