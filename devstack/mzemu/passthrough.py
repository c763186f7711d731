"""Statements the emulator does not answer itself, relayed to PostgreSQL.

Each session has its own link (``backend.py``), opened on first use with the
session's shared variables; in a block the link runs a transaction of its own. A
block that read through PostgreSQL cannot DECLARE a SUBSCRIBE, and a block that ran
a SUBSCRIBE cannot read through PostgreSQL (Materialize's read-only transactions).
"""

from __future__ import annotations

from typing import Any

from devstack.mzemu import errors, wire
from devstack.mzemu.backend import PgLink
from devstack.mzemu.connection import AlreadyReported
from devstack.mzemu.statements import Declare, PassThrough, Statement
from devstack.mzemu.transactions import Transactions
from devstack.mzemu.variables import SHARED_WITH_POSTGRES

__all__ = ["PassThroughRelay"]

_FLUSH = wire.message(b"H")


class PassThroughRelay(Transactions):
    """Relaying statements and PostgreSQL's answers."""

    def _check_passthrough_allowed(self, stmt: Statement) -> None:
        if self.ops == "subscribe":
            raise errors.subscribe_only_transaction()
        if isinstance(stmt, PassThrough) and _is_query(stmt.sql):
            self._require_cluster()

    async def _link_ready(self) -> PgLink:
        if self.link is None:
            settings = {
                target: self.vars.get(key) or ""
                for key, target in SHARED_WITH_POSTGRES.items()
                if self.vars.get(key) not in (None, "0")
            }
            self.link = await PgLink.connect(self.server.link_params, settings)
        if self.block is not None and self.link.status == "I" and not self._link_dirty:
            await self.link.run_internal("BEGIN")
        return self.link

    async def _passthrough(self, stmt: Statement, sql: str) -> None:
        self._check_passthrough_allowed(stmt)
        sql = _catalog_compat(sql)
        link = await self._link_ready()
        if self.block is not None:
            self.ops = "read"
        link.write(wire.message(b"Q", sql.encode() + b"\0"))
        self._link_busy = True
        try:
            saw_error = await self._relay_until(b"Z")
        finally:
            self._link_busy = False
        if not saw_error and isinstance(stmt, Declare):
            self.pg_cursors.add(stmt.name)
        if saw_error:
            if self.block == "explicit":
                self.failed = True
            elif self.block == "implicit":
                await self._end_block(commit=False)
            raise AlreadyReported()

    async def _relay_extended(self, raw: bytes, stops: bytes) -> tuple[bytes, bool]:
        link = await self._link_ready()
        if self.block is not None:
            self.ops = "read"
        self._link_dirty = True
        link.write(raw + _FLUSH)
        self._link_busy = True
        try:
            kind, saw_error = await self._relay_until(stops + b"E", final=True)
        finally:
            self._link_busy = False
        if saw_error:
            self._ext_failed = True
            if self.block == "explicit":
                self.failed = True
            raise AlreadyReported()
        return kind, saw_error

    async def _relay_until(self, stops: bytes, final: bool = False) -> Any:
        """Forward PostgreSQL's messages until one in ``stops`` (``Z`` is not forwarded).

        Returns whether an ErrorResponse went by (and, with ``final``, the last kind).
        """
        link = self.link
        assert link is not None
        saw_error = False
        while True:
            kind, body = await link.read_message()
            if kind == b"Z":
                link.status = body.decode()
                return (kind, saw_error) if final else saw_error
            if kind == b"E":
                saw_error = True
            if kind == b"G":
                # COPY FROM STDIN through the emulator is not supported: refuse it.
                link.write(wire.message(b"f", b"COPY FROM STDIN is not supported by mzemu\0"))
                continue
            self._send(wire.message(kind, body))
            await self._maybe_flush()
            if final and kind in stops:
                return kind, saw_error


def _catalog_compat(sql: str) -> str:
    """Adapt psql's catalog queries for the reported server_version (9.5) to PostgreSQL 15.

    psql writes its ``\\d`` queries for the version the server reports, which is
    Materialize's 9.5.0; PostgreSQL 12 removed ``pg_class.relhasoids``.
    """
    if "relhasoids" in sql:
        sql = sql.replace("c.relhasoids", "false")
    return sql


def _is_query(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)
    return bool(head) and head[0].lower() in ("select", "with", "values", "table", "copy")
