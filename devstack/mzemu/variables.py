"""Session variables: defaults, startup settings, SET/RESET and SHOW.

Materialize's rules: ``cluster`` may be set to a cluster that does not exist (a
notice; the statement that needs it fails), but not in a transaction that already
read or subscribed; read-only variables refuse; a few variables are shared with the
PostgreSQL link so pass-through statements behave alike.
"""

from __future__ import annotations

from devstack.mzemu import errors
from devstack.mzemu.connection import CLUSTERS, DEFAULT_CLUSTER, Connection, Exec
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.statements import ShowVar, parse_interval_ms
from devstack.mzemu.values import OID
from devstack.mzemu.wire import ColumnDesc

__all__ = ["NOTIFY", "SHARED_WITH_POSTGRES", "Variables"]

# Session variables reported with ParameterStatus, with their display names.
NOTIFY = {
    "application_name": "application_name",
    "client_encoding": "client_encoding",
    "datestyle": "DateStyle",
    "integer_datetimes": "integer_datetimes",
    "intervalstyle": "IntervalStyle",
    "is_superuser": "is_superuser",
    "server_version": "server_version",
    "standard_conforming_strings": "standard_conforming_strings",
    "timezone": "TimeZone",
    "mz_version": "mz_version",
}

# Variables PostgreSQL must share for pass-through statements to behave alike.
SHARED_WITH_POSTGRES = {
    "timezone": "TimeZone",
    "datestyle": "DateStyle",
    "intervalstyle": "IntervalStyle",
    "extra_float_digits": "extra_float_digits",
    "statement_timeout": "statement_timeout",
    "lock_timeout": "lock_timeout",
}


class Variables(Connection):
    """Session variables: startup, SET/RESET, SHOW."""

    def _init_vars(self, params: dict[str, str]) -> None:
        config = self.engine.config
        defaults = {
            "application_name": "",
            "client_encoding": "UTF8",
            "cluster": DEFAULT_CLUSTER,
            "database": params.get("database", "materialize"),
            "datestyle": "ISO, MDY",
            "idle_in_transaction_session_timeout": _format_ms(
                config.idle_in_transaction_timeout_ms
            ),
            "integer_datetimes": "on",
            "intervalstyle": "postgres",
            "is_superuser": "off",
            "mz_version": "v0.0.0-mzemu",
            "search_path": "public",
            "server_version": "9.5.0",
            "server_version_num": "90500",
            "standard_conforming_strings": "on",
            "statement_timeout": "0",
            "timezone": "UTC",
            "transaction_isolation": "strict serializable",
        }
        for name, value in defaults.items():
            self.vars.set(name, value)

    def _set_var(
        self, name: str, value: str | None, notices: list[Notice], from_startup: bool = False
    ) -> None:
        key = name.lower()
        if key == "cluster":
            # Materialize's validate_set_cluster: only a transaction that already ran a
            # read or a SUBSCRIBE refuses (a bare BEGIN; SET cluster is fine).
            if self.block is not None and self.ops is not None and not from_startup:
                raise errors.invalid_set_cluster()
            cluster = (value or DEFAULT_CLUSTER).strip().strip('"')
            self.vars.set("cluster", cluster)
            if cluster not in CLUSTERS:
                notices.append(errors.cluster_does_not_exist(cluster))
            return
        if key == "idle_in_transaction_session_timeout":
            if value is None:
                value = _format_ms(self.engine.config.idle_in_transaction_timeout_ms)
            raw = value.strip()
            ms = float(raw) if raw.replace(".", "", 1).isdigit() else parse_interval_ms(raw)
            self.vars.set(key, _format_ms(int(ms)))
            return
        if (
            key == "client_encoding"
            and value is not None
            and value.upper() not in ("UTF8", "UTF-8")
        ):
            raise MzError("22023", f'invalid value for parameter "client_encoding": "{value}"')
        if key in ("server_version", "server_version_num", "is_superuser", "integer_datetimes"):
            raise MzError("55P02", f'parameter "{name}" cannot be changed')
        if value is None:
            self.vars.values.pop(key, None)
            defaults: dict[str, str] = {"timezone": "UTC", "datestyle": "ISO, MDY"}
            if key in defaults:
                self.vars.set(key, defaults[key])
            return
        if key == "transaction_isolation":
            return
        self.vars.set(key, value.strip("'"))

    async def _share_with_postgres(self, name: str) -> None:
        key = name.lower()
        if self.link is None or key not in SHARED_WITH_POSTGRES:
            return
        value = self.vars.get(key)
        target = SHARED_WITH_POSTGRES[key]
        if value is None:
            await self.link.run_internal(f"RESET {target}")
        else:
            literal = value.replace("'", "''")
            await self.link.run_internal(f"SET {target} = '{literal}'")

    def _show(self, stmt: ShowVar, ex: Exec) -> None:
        if stmt.name == "all":
            rows = [[k.encode(), v.encode(), b""] for k, v in sorted(self.vars.values.items())]
            cols = [
                ColumnDesc("name", OID["text"]),
                ColumnDesc("setting", OID["text"]),
                ColumnDesc("description", OID["text"]),
            ]
            self._rows(cols, rows, f"SELECT {len(rows)}", ex)
            return
        value = self.vars.get(stmt.name) or ""
        if stmt.name == "cluster" and value not in CLUSTERS:
            self._send_notice(errors.cluster_does_not_exist(value))
        self._rows([ColumnDesc(stmt.name, OID["text"])], [[value.encode()]], "SHOW", ex)


def _format_ms(ms: int) -> str:
    if ms == 0:
        return "0"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
