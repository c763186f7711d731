"""The emulator's settings, read once from the environment.

==============================================  ===========================================
variable                                        meaning (default)
==============================================  ===========================================
MZEMU_HOST, MZEMU_PORT                          listen address (127.0.0.1, 6875; 0: any port)
MZEMU_PG_DSN                                    PostgreSQL to serve (libpq DSN; empty: PG*);
                                                ``sslmode``/``sslrootcert`` in it (or
                                                PGSSLMODE, PGSSLROOTCERT) apply to every
                                                link: TLS to PostgreSQL, as Materialize's
                                                ``SSL MODE verify-full`` source connection
MZEMU_PG_SCHEMA                                 schema holding triples and the view (public)
MZEMU_VIEW, MZEMU_KEY_COLUMN                    kept view (orders_search_source_mv, order_id)
MZEMU_TICK_MS                                   timestamp interval (1000, Materialize's)
MZEMU_RETAIN_MS                                 history kept for AS OF (1000)
MZEMU_MAX_BUFFERED_BYTES                        subscribe_max_buffered_bytes (128 MiB)
MZEMU_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS    session default, 0 disables (120000)
MZEMU_USER, MZEMU_PASSWORD                      the one login (materialize, materialize)
MZEMU_LOG_LEVEL                                 DEBUG, INFO, WARNING or ERROR (INFO)
MZEMU_TLS_CERT, MZEMU_TLS_KEY                   PEM files: TLS required, as Materialize with
                                                ``--tls-mode=require`` (empty: plain text)
MZEMU_SYNTHETIC_RATE                            changes/s made up from the view's own rows,
                                                besides PostgreSQL's (0: none; for benches)
MZEMU_SYNTHETIC_COLUMN                          the text column they change (order_status)
MZEMU_TRACEMALLOC                               a file: trace allocations and write where the
                                                memory goes there on SIGUSR2 and at exit
                                                (``memory.py``; empty: off, the default)
MZEMU_TRACEMALLOC_FRAMES                        frames a traced allocation keeps (6; 0: no
                                                tracing, the report without its sites)
==============================================  ===========================================

Pure module: :func:`load_config` reads the mapping it is given and raises
:class:`ConfigError` naming the variable and what it expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

__all__ = ["ConfigError", "EmulatorConfig", "load_config"]


class ConfigError(ValueError):
    """A variable has a value the emulator cannot use."""


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 6875
    pg_dsn: str = ""
    pg_schema: str = "public"
    view: str = "orders_search_source_mv"
    key_column: str = "order_id"
    tick_ms: int = 1000
    retain_ms: int = 1000
    max_buffered_bytes: int = 128 * 1024 * 1024
    idle_in_transaction_timeout_ms: int = 120_000
    user: str = "materialize"
    password: str = "materialize"
    log_level: str = "INFO"
    tls_cert: str = ""
    tls_key: str = ""
    synthetic_rate: int = 0
    synthetic_column: str = "order_status"
    tracemalloc_path: str = ""
    tracemalloc_frames: int = 6


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: expected an integer in [{minimum}, {maximum}]")
    return value


def _ident(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not _IDENT.match(value) or len(value) > 63:
        raise ConfigError(f"{name}={value!r}: expected an SQL identifier")
    return value


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _pg_dsn(env: Mapping[str, str]) -> str:
    # checked here so that a typo exits 2 naming the variable; the DSN itself is never
    # echoed (it may hold a password)
    dsn = env.get("MZEMU_PG_DSN", "")
    try:
        sslmode = conninfo_to_dict(dsn).get("sslmode") or env.get("PGSSLMODE") or "prefer"
    except ProgrammingError:  # its text quotes the DSN
        raise ConfigError("MZEMU_PG_DSN: expected a libpq connection string or URI") from None
    if sslmode not in _SSLMODES:
        raise ConfigError(
            f"MZEMU_PG_DSN: sslmode {sslmode!r}: expected one of {', '.join(_SSLMODES)}"
        )
    return dsn


def load_config(env: Mapping[str, str]) -> EmulatorConfig:
    """Settings from ``env``. Raises ConfigError on a bad value."""
    level = (env.get("MZEMU_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"MZEMU_LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")
    if bool(env.get("MZEMU_TLS_CERT")) != bool(env.get("MZEMU_TLS_KEY")):
        raise ConfigError("MZEMU_TLS_CERT and MZEMU_TLS_KEY: expected both or neither")
    return EmulatorConfig(
        host=env.get("MZEMU_HOST") or "127.0.0.1",
        port=_int(env, "MZEMU_PORT", 6875, 0, 65535),
        pg_dsn=_pg_dsn(env),
        pg_schema=_ident(env, "MZEMU_PG_SCHEMA", "public"),
        view=_ident(env, "MZEMU_VIEW", "orders_search_source_mv"),
        key_column=_ident(env, "MZEMU_KEY_COLUMN", "order_id"),
        tick_ms=_int(env, "MZEMU_TICK_MS", 1000, 1, 3_600_000),
        retain_ms=_int(env, "MZEMU_RETAIN_MS", 1000, 0, 30 * 86_400_000),
        max_buffered_bytes=_int(env, "MZEMU_MAX_BUFFERED_BYTES", 128 * 1024 * 1024, 1, 1 << 40),
        idle_in_transaction_timeout_ms=_int(
            env, "MZEMU_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS", 120_000, 0, 1 << 31
        ),
        user=env.get("MZEMU_USER") or "materialize",
        password=env.get("MZEMU_PASSWORD", "materialize"),
        log_level=level,
        tls_cert=env.get("MZEMU_TLS_CERT", ""),
        tls_key=env.get("MZEMU_TLS_KEY", ""),
        synthetic_rate=_int(env, "MZEMU_SYNTHETIC_RATE", 0, 0, 10_000_000),
        synthetic_column=_ident(env, "MZEMU_SYNTHETIC_COLUMN", "order_status"),
        tracemalloc_path=env.get("MZEMU_TRACEMALLOC", ""),
        tracemalloc_frames=_int(env, "MZEMU_TRACEMALLOC_FRAMES", 6, 0, 100),
    )
