"""Running one parsed statement, whichever protocol carried it.

Materialize's rule first: a transaction that ran a SUBSCRIBE allows only FETCH,
CLOSE, SET/SHOW and the end of the block. Then each statement goes to the layer
that answers it; anything the emulator does not answer is relayed to PostgreSQL.
Also the emulator's admin functions (``mzemu_*``, see the package docstring).
"""

from __future__ import annotations

from devstack.mzemu import errors, wire
from devstack.mzemu.connection import DEFAULT_CLUSTER, Exec, Portal
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.privileges import parse_role_statement, reads_view
from devstack.mzemu.statements import (
    Admin,
    Begin,
    Close,
    Commit,
    CopySubscribe,
    Declare,
    Fetch,
    MzNow,
    PassThrough,
    ResetVar,
    Rollback,
    SetVar,
    ShowVar,
    Statement,
    Subscribe,
)
from devstack.mzemu.streaming import Streaming
from devstack.mzemu.values import OID
from devstack.mzemu.variables import NOTIFY
from devstack.mzemu.wire import ColumnDesc

__all__ = ["Executor"]


class Executor(Streaming):
    """Runs one statement; describes the columns of the statements it answers."""

    async def _run(self, stmt: Statement, sql: str, ex: Exec) -> None:
        if self._role_statement_or_checked(stmt, sql):
            return
        if self.ops == "subscribe" and not isinstance(
            stmt, Fetch | Close | Commit | Rollback | SetVar | ResetVar | ShowVar | Begin
        ):
            raise errors.subscribe_only_transaction()
        if isinstance(stmt, Begin):
            self._begin()
        elif isinstance(stmt, Commit):
            await self._commit()
        elif isinstance(stmt, Rollback):
            await self._rollback()
        elif isinstance(stmt, SetVar | ResetVar):
            name = stmt.name
            value = stmt.value if isinstance(stmt, SetVar) else None
            notices: list[Notice] = []
            self._set_var(name, value, notices)
            await self._share_with_postgres(name)
            for notice in notices:
                self._send_notice(notice)
            display = NOTIFY.get(name.lower())
            if display is not None:
                self._send(wire.parameter_status(display, self.vars.get(name) or ""))
            self._send(wire.command_complete("SET" if isinstance(stmt, SetVar) else "RESET"))
        elif isinstance(stmt, ShowVar) and (
            self.vars.get(stmt.name) is not None or stmt.name == "all"
        ):
            self._show(stmt, ex)
        elif isinstance(stmt, MzNow):
            if self.block is not None:
                self.ops = self.ops or "read"
            columns = await self._columns(stmt)
            assert columns is not None
            self._rows(columns, [[str(self.engine.closed_ts).encode()]], "SELECT 1", ex)
        elif isinstance(stmt, Admin):
            result = await self._admin(stmt)
            self._rows(
                [ColumnDesc(stmt.function, OID["int8"], 8)],
                [[str(result).encode()]],
                "SELECT 1",
                ex,
            )
        elif isinstance(stmt, Declare) and stmt.subscribe is not None:
            await self._declare(stmt, ex.params)
        elif isinstance(stmt, Fetch) and stmt.name in self.cursors:
            await self._fetch(self.cursors[stmt.name], stmt, ex)
        elif isinstance(stmt, Fetch) and stmt.name not in self.pg_cursors:
            raise errors.unknown_cursor(stmt.name)
        elif isinstance(stmt, Close) and (stmt.name is None or stmt.name in self.cursors):
            await self._close_cursor(stmt, sql)
        elif isinstance(stmt, Close) and stmt.name not in self.pg_cursors:
            raise errors.unknown_cursor(stmt.name or "")
        elif isinstance(stmt, Subscribe):
            await self._stream_subscribe(stmt, ex)
        elif isinstance(stmt, CopySubscribe):
            await self._copy_subscribe(stmt)
        else:
            await self._passthrough(stmt, sql)

    def _role_statement_or_checked(self, stmt: Statement, sql: str) -> bool:
        """Runs a role or privilege statement (True: answered), or checks that the
        session's role may read the kept view if ``sql`` names it (privileges.py)."""
        privileges = self.engine.privileges
        if isinstance(stmt, PassThrough) and (role := parse_role_statement(sql)) is not None:
            self._send(wire.command_complete(privileges.run(role, self.user)))
            return True
        if reads_view(sql, self.engine.config.view):  # SUBSCRIBE, DECLARE, COPY, SELECT
            privileges.check_read(self.user, self.vars.get("cluster") or DEFAULT_CLUSTER)
        return False

    async def _columns(
        self, stmt: Statement, portal: Portal | None = None
    ) -> list[ColumnDesc] | None:
        if isinstance(stmt, ShowVar):
            return [ColumnDesc(stmt.name, OID["text"])]
        if isinstance(stmt, MzNow):
            oid = OID["text"] if stmt.as_text else OID["mz_timestamp"]
            return [ColumnDesc(stmt.column, oid, -1 if stmt.as_text else 8)]
        if isinstance(stmt, Admin):
            return [ColumnDesc(stmt.function, OID["int8"], 8)]
        if isinstance(stmt, Fetch):
            cursor = self.cursors.get(stmt.name)
            return list(cursor.plan.layout.columns) if cursor else None
        if isinstance(stmt, Subscribe):
            if portal is not None and portal.plan is None:
                self._require_cluster()
                portal.plan = await self.engine.plan(stmt)
            plan = portal.plan if portal is not None else await self.engine.plan(stmt)
            assert plan is not None
            return list(plan.layout.columns)
        return None

    async def _admin(self, stmt: Admin) -> int:
        fn = stmt.function
        if fn == "mzemu_drop_connections":
            return self.server.drop_connections(except_pid=self.pid)
        if fn == "mzemu_pause_ticks":
            ms = int(stmt.args[0]) if stmt.args else 3_600_000
            await self.engine.pause(ms)
            return ms
        if fn == "mzemu_resume_ticks":
            self.engine.resume()
            return 0
        if fn == "mzemu_compact":
            return self.engine.compact()
        if fn == "mzemu_tick":
            return await self.engine.tick_now()
        if fn == "mzemu_frontier":
            return self.engine.upper
        if fn == "mzemu_since":
            return self.engine.view_since
        if fn == "mzemu_synthetic_rate":
            return self.engine.set_synthetic_rate(int(stmt.args[0]) if stmt.args else 0)
        raise MzError("42883", f"function {fn}() does not exist")
