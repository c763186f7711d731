"""One client connection: Materialize's pgwire front end over the emulator's engine.

Startup (SSLRequest answered ``N``, cleartext password), the simple and extended
query protocols, Materialize's transaction rules for SUBSCRIBE, FETCH with and
without timeout, COPY (SUBSCRIBE …) TO STDOUT, cancellation, and the
idle-in-transaction timeout. Statements the emulator does not answer itself are
relayed to PostgreSQL on the session's own link (``backend.py``).

Transaction blocks: ``None`` (autocommit), ``"implicit"`` (several statements in
one simple Query) or ``"explicit"`` (BEGIN). A block that ran a SUBSCRIBE allows
only FETCH, CLOSE, SET/SHOW and the end of the block; a block that read through
PostgreSQL cannot DECLARE a SUBSCRIBE (Materialize's read-only transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from devstack.mzemu import errors, wire
from devstack.mzemu.backend import PgLink
from devstack.mzemu.engine import Plan
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.output import Event, OutputLayout, normalize_formats
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
    parse_interval_ms,
    parse_statement,
    split_statements,
    tokenize,
)
from devstack.mzemu.subscription import Subscription
from devstack.mzemu.values import BINARY_COPY_HEADER, BINARY_COPY_TRAILER, OID, binary_encoder
from devstack.mzemu.wire import ColumnDesc

if TYPE_CHECKING:
    from devstack.mzemu.server import Server

__all__ = ["Session"]

log = logging.getLogger("mzemu.session")

T = TypeVar("T")

CLUSTERS = frozenset(
    {"serving", "compute", "quickstart", "mz_catalog_server", "mz_system", "mz_probe"}
)
DEFAULT_CLUSTER = "quickstart"
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
_FLUSH_BYTES = 1 << 18
_CHUNK_EVENTS = 2048
_FLUSH = wire.message(b"H")
_SYNC = wire.message(b"S")


@dataclass
class _Cursor:
    name: str
    plan: Plan
    params: tuple[str | None, ...] = ()  # the DECLARE's parameters (AS OF $1)
    sub: Subscription | None = None


@dataclass
class _Prepared:
    sql: str
    stmt: Statement
    param_types: tuple[int, ...]
    passthrough: bool


@dataclass
class _Portal:
    prepared: _Prepared
    params: tuple[str | None, ...] = ()
    result_formats: tuple[int, ...] = ()
    passthrough: bool = False
    sub: Subscription | None = None  # a bare SUBSCRIBE being paged with max_rows
    plan: Plan | None = None
    done_tag: str | None = None
    sent: int = 0


@dataclass
class _Exec:
    """How one statement runs: simple or extended protocol, parameters, formats."""

    simple: bool
    params: tuple[str | None, ...] = ()
    result_formats: tuple[int, ...] = ()
    max_rows: int = 0
    portal: _Portal | None = None


@dataclass
class _Vars:
    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values.get(name.lower())

    def set(self, name: str, value: str) -> None:
        self.values[name.lower()] = value


class Session:
    """Serves one client connection until it ends. Never raises out of :meth:`run`."""

    def __init__(
        self,
        server: Server,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pid: int,
        secret: int,
    ) -> None:
        self.server = server
        self.engine = server.engine
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.secret = secret
        self.frames = wire.FrameReader()
        self._out: list[bytes] = []
        self._out_size = 0
        self.vars = _Vars()
        self.block: str | None = None  # None, "implicit", "explicit"
        self.failed = False
        self.ops: str | None = None  # None, "subscribe", "read"
        self.cursors: dict[str, _Cursor] = {}
        self.pg_cursors: set[str] = set()
        self.prepared: dict[str, _Prepared] = {}
        self.portals: dict[str, _Portal] = {}
        self.link: PgLink | None = None
        self._link_dirty = False  # extended-protocol messages sent since the last Sync
        self._link_busy = False
        self._ext_failed = False
        self._op: asyncio.Future[Any] | None = None
        # Like PostgreSQL's QueryCancelPending: a cancel that arrives while a statement
        # runs but between two waits still ends that statement at its next wait.
        self._executing = False
        self._cancel_pending = False
        self.user = ""
        self.closed = False

    # -- plumbing
    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.writer.write(data)
        await self.writer.drain()

    async def _maybe_flush(self) -> None:
        if self._out_size >= _FLUSH_BYTES:
            await self._flush()

    def _send_error(self, err: MzError) -> None:
        self._send(wire.error_response(err))

    def _send_notice(self, notice: Notice) -> None:
        self._send(wire.notice_response(notice))

    def _status(self) -> str:
        if self.block == "explicit":
            return "E" if self.failed else "T"
        return "I"

    async def _ready(self) -> None:
        self._send(wire.ready_for_query(self._status()))
        await self._flush()

    async def _read_more(self, wait_s: float | None) -> bool:
        """Read from the client into the frame buffer; False on timeout.

        Raises ConnectionResetError at end of input.
        """
        try:
            if wait_s is None:
                data = await self.reader.read(1 << 16)
            else:
                data = await asyncio.wait_for(self.reader.read(1 << 16), max(wait_s, 0.0))
        except TimeoutError:
            return False
        if not data:
            raise ConnectionResetError("client closed the connection")
        self.frames.feed(data)
        return True

    async def _next_message(self, wait_s: float | None) -> tuple[bytes, bytes] | None:
        loop = asyncio.get_running_loop()
        deadline = None if wait_s is None else loop.time() + wait_s
        while True:
            msg = self.frames.next_message()
            if msg is not None:
                return msg
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            if not await self._read_more(remaining):
                return None

    # -- lifecycle
    async def run(self) -> None:
        try:
            if await self._startup():
                await self._loop()
        except MzError as err:
            with contextlib.suppress(Exception):
                self._send_error(err)
                await self._flush()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %d failed", self.pid)
            with contextlib.suppress(Exception):
                self._send_error(
                    MzError("XX000", "internal error in the emulator", severity="FATAL")
                )
                await self._flush()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        self.closed = True
        for cursor in self.cursors.values():
            if cursor.sub is not None:
                self.engine.stop(cursor.sub)
        self.cursors.clear()
        for portal in self.portals.values():
            if portal.sub is not None:
                self.engine.stop(portal.sub)
        self.portals.clear()
        if self.link is not None:
            self.link.close()
            self.link = None
        with contextlib.suppress(Exception):
            self.writer.close()

    def kill(self) -> None:
        """Drop the connection abruptly (admin ``mzemu_drop_connections()``)."""
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    def request_cancel(self) -> None:
        """A CancelRequest for this session: interrupt the running statement, if any."""
        if not self._executing:
            return
        if self._link_busy and self.link is not None:
            asyncio.get_running_loop().create_task(self.link.cancel())
            return
        self._cancel_pending = True
        if self._op is not None and not self._op.done():
            self._op.cancel()

    async def _startup(self) -> bool:
        # A deeper write buffer keeps the socket busy while the next chunk is encoded.
        self.writer.transport.set_write_buffer_limits(high=4 << 20)
        while True:
            body = self.frames.next_startup()
            if body is None:
                if not await self._read_more(30.0):
                    raise ConnectionResetError("no startup packet")
                continue
            packet = wire.parse_startup(body)
            if packet.code in (wire.SSL_REQUEST_CODE, wire.GSSENC_REQUEST_CODE):
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if packet.code == wire.CANCEL_REQUEST_CODE:
                self.server.cancel(packet.cancel_pid, packet.cancel_secret)
                return False
            if packet.code != wire.PROTOCOL_V3:
                raise MzError(
                    "08004",
                    "server does not support the client's requested protocol version",
                    severity="FATAL",
                )
            break
        params = packet.params
        self.user = params.get("user", "")
        self._send(wire.authentication_cleartext())
        await self._flush()
        msg = await self._next_message(60.0)
        if msg is None or msg[0] != b"p":
            raise MzError("28000", "expected Password message", severity="FATAL")
        password = msg[1].rstrip(b"\0").decode("utf-8", "replace")
        config = self.engine.config
        if self.user != config.user or password != config.password:
            raise MzError("28P01", "invalid password", severity="FATAL")
        self._init_vars(params)
        notices: list[Notice] = []
        for key, value in self._startup_settings(params):
            try:
                self._set_var(key, value, notices, from_startup=True)
            except MzError as err:
                notices.append(Notice("00000", f"startup setting {key} not set: {err.message}"))
        self._send(wire.authentication_ok())
        for name, display in NOTIFY.items():
            current = self.vars.get(name)
            if current is not None:
                self._send(wire.parameter_status(display, current))
        self._send(wire.backend_key_data(self.pid, self.secret))
        for notice in notices:
            self._send_notice(notice)
        await self._ready()
        return True

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

    @staticmethod
    def _startup_settings(params: dict[str, str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key, value in params.items():
            if key in ("user", "database", "replication"):
                continue
            if key == "options":
                out.extend(_parse_options(value))
            else:
                out.append((key, value))
        return out

    async def _loop(self) -> None:
        while not self.closed:
            timeout: float | None = None
            if self.block == "explicit":
                ms = parse_interval_ms(self.vars.get("idle_in_transaction_session_timeout") or "0")
                timeout = ms / 1000 if ms > 0 else None
            msg = await self._next_message(timeout)
            if msg is None:
                await self._idle_expired()
                return
            kind, body = msg
            if kind == b"X":
                return
            await self._dispatch(kind, body)

    async def _idle_expired(self) -> None:
        # Materialize sends the FATAL error at once, cleans up, then waits for the
        # client's next message before closing (pgwire may only answer requests).
        await self._end_block(commit=False)
        self._send_error(errors.idle_in_transaction_timeout())
        await self._flush()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader.read(1 << 16), 60.0)

    async def _dispatch(self, kind: bytes, body: bytes) -> None:
        self._executing = kind in (b"Q", b"E")
        self._cancel_pending = False
        try:
            await self._dispatch_message(kind, body)
        finally:
            self._executing = False
            self._cancel_pending = False

    async def _dispatch_message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            await self._simple_query(body.rstrip(b"\0").decode("utf-8", "replace"))
            return
        if kind == b"S":
            await self._sync()
            return
        if kind == b"H":
            await self._flush()
            return
        if kind not in (b"P", b"B", b"D", b"E", b"C"):
            return  # stray CopyData/CopyDone/CopyFail outside COPY FROM: ignored like Materialize
        if self._ext_failed:
            return
        try:
            if kind == b"P":
                await self._parse(wire.parse_parse(body))
            elif kind == b"B":
                await self._bind(wire.parse_bind(body))
            elif kind == b"D":
                await self._describe(wire.parse_describe(body))
            elif kind == b"E":
                await self._execute_portal(wire.parse_execute(body))
            else:
                await self._close(wire.parse_close(body))
        except _AlreadyReported:
            self._ext_failed = True
        except MzError as err:
            self._send_error(err)
            await self._flush()
            self._ext_failed = True
            await self._on_error()
        await self._maybe_flush()

    # -- transactions
    async def _on_error(self) -> None:
        if self.block == "explicit":
            self.failed = True
            self._stop_subscriptions()
        elif self.block == "implicit":
            await self._end_block(commit=False)
        else:
            self._stop_subscriptions()

    def _stop_subscriptions(self) -> None:
        for cursor in self.cursors.values():
            if cursor.sub is not None:
                self.engine.stop(cursor.sub)
                cursor.sub = None

    async def _end_block(self, commit: bool) -> None:
        self._stop_subscriptions()
        self.cursors.clear()
        self.pg_cursors.clear()
        for name in [n for n, p in self.portals.items() if p.sub is not None]:
            sub = self.portals[name].sub
            assert sub is not None
            self.engine.stop(sub)
            del self.portals[name]
        self.block = None
        self.failed = False
        self.ops = None
        link = self.link
        if link is not None and link.status in ("T", "E"):
            try:
                await link.run_internal("COMMIT" if commit else "ROLLBACK")
            except MzError as err:
                if commit:
                    raise err
                log.warning("session %d: PostgreSQL ROLLBACK failed: %s", self.pid, err)

    # -- simple query protocol
    async def _simple_query(self, sql: str) -> None:
        try:
            texts = split_statements(sql)
        except MzError as err:
            self._send_error(err)
            await self._on_error()
            await self._ready()
            return
        if not texts:
            self._send(wire.empty_query_response())
            await self._ready()
            return
        if len(texts) > 1 and self.block is None:
            self.block = "implicit"
        for text in texts:
            try:
                stmt = parse_statement(text)
                if self.failed and not isinstance(stmt, Commit | Rollback):
                    raise errors.aborted_transaction()
                await self._run(stmt, text, _Exec(simple=True))
            except _AlreadyReported:
                break
            except MzError as err:
                self._send_error(err)
                await self._on_error()
                break
            await self._maybe_flush()
        if self.block == "implicit":
            try:
                await self._end_block(commit=True)
            except MzError as err:
                self._send_error(err)
        await self._ready()

    # -- extended query protocol
    async def _parse(self, msg: wire.Parse) -> None:
        if msg.name and msg.name in self.prepared:
            raise MzError("42P05", f"prepared statement {errors.quoted(msg.name)} already exists")
        texts = split_statements(msg.sql)
        if len(texts) > 1:
            raise MzError("42601", "cannot insert multiple commands into a prepared statement")
        text = texts[0] if texts else ""
        stmt: Statement = parse_statement(text) if text else PassThrough("")
        passthrough = self._is_passthrough(stmt)
        if self.failed and not isinstance(stmt, Commit | Rollback):
            raise errors.aborted_transaction()
        if passthrough:
            self._check_passthrough_allowed(stmt)
            await self._relay_extended(_raw(b"P", msg), b"1")
        else:
            self._send(wire.parse_complete())
        self.prepared[msg.name] = _Prepared(text, stmt, msg.param_types, passthrough)

    def _is_passthrough(self, stmt: Statement) -> bool:
        if isinstance(stmt, PassThrough):
            return True
        if isinstance(stmt, Declare):
            return stmt.subscribe is None
        if isinstance(stmt, Fetch | Close) and stmt.name is not None:
            return stmt.name in self.pg_cursors and stmt.name not in self.cursors
        if isinstance(stmt, ShowVar):
            return self.vars.get(stmt.name) is None and stmt.name != "all"
        return False

    async def _bind(self, msg: wire.Bind) -> None:
        prep = self.prepared.get(msg.statement)
        if prep is None:
            raise MzError(
                "26000", f"prepared statement {errors.quoted(msg.statement)} does not exist"
            )
        if prep.passthrough:
            await self._relay_extended(_raw(b"B", msg), b"2")
            self.portals[msg.portal] = _Portal(prep, passthrough=True)
            return
        params = tuple(
            _decode_param(value, _param_format(msg.param_formats, i), _at(prep.param_types, i))
            for i, value in enumerate(msg.params)
        )
        old = self.portals.pop(msg.portal, None)
        if old is not None and old.sub is not None:
            self.engine.stop(old.sub)
        self.portals[msg.portal] = _Portal(prep, params, msg.result_formats)
        self._send(wire.bind_complete())

    async def _describe(self, msg: wire.Describe) -> None:
        if msg.kind == "S":
            prep = self.prepared.get(msg.name)
            if prep is None:
                raise MzError(
                    "26000", f"prepared statement {errors.quoted(msg.name)} does not exist"
                )
            if prep.passthrough:
                await self._relay_extended(_raw(b"D", msg), b"Tn")
                return
            self._send(wire.parameter_description(_param_oids(prep)))
            columns = await self._columns(prep.stmt)
            if columns is None:
                self._send(wire.no_data())
            else:
                self._send(wire.row_description(columns, (0,) * len(columns)))
            return
        portal = self.portals.get(msg.name)
        if portal is None:
            raise MzError("34000", f"portal {errors.quoted(msg.name)} does not exist")
        if portal.passthrough:
            await self._relay_extended(_raw(b"D", msg), b"Tn")
            return
        columns = await self._columns(portal.prepared.stmt, portal)
        if columns is None:
            self._send(wire.no_data())
            return
        formats = normalize_formats(portal.result_formats, len(columns))
        self._send(wire.row_description(columns, formats))

    async def _execute_portal(self, msg: wire.Execute) -> None:
        portal = self.portals.get(msg.portal)
        if portal is None:
            raise MzError("34000", f"portal {errors.quoted(msg.portal)} does not exist")
        if portal.passthrough:
            stmt = portal.prepared.stmt
            kind, saw_error = await self._relay_extended(_raw(b"E", msg), b"CsIE")
            if not saw_error and isinstance(stmt, Declare):
                self.pg_cursors.add(stmt.name)
            if not saw_error and isinstance(stmt, Close):
                if stmt.name is None:
                    self.pg_cursors.clear()
                else:
                    self.pg_cursors.discard(stmt.name)
            del kind
            return
        if portal.done_tag is not None:
            self._send(wire.command_complete(portal.done_tag))
            return
        stmt = portal.prepared.stmt
        if self.failed and not isinstance(stmt, Commit | Rollback):
            raise errors.aborted_transaction()
        await self._run(
            stmt,
            portal.prepared.sql,
            _Exec(False, portal.params, portal.result_formats, msg.max_rows, portal),
        )

    async def _close(self, msg: wire.Close) -> None:
        if msg.kind == "S":
            prep = self.prepared.pop(msg.name, None)
            if prep is not None and prep.passthrough:
                await self._relay_extended(_raw(b"C", msg), b"3")
                return
        else:
            portal = self.portals.pop(msg.name, None)
            if portal is not None and portal.sub is not None:
                self.engine.stop(portal.sub)
            if portal is not None and portal.passthrough:
                await self._relay_extended(_raw(b"C", msg), b"3")
                return
        self._send(wire.close_complete())

    async def _sync(self) -> None:
        self._ext_failed = False
        if self._link_dirty and self.link is not None:
            self._link_dirty = False
            self.link.write(_SYNC)
            await self._relay_until(b"Z")
            if self.link.status == "E" and self.block == "explicit":
                self.failed = True
        # Materialize commits every statement outside an explicit block at Sync, and
        # a transaction's end destroys its portals.
        if self.block is None:
            for portal in self.portals.values():
                if portal.sub is not None:
                    self.engine.stop(portal.sub)
            self.portals.clear()
        await self._ready()

    # -- describing our statements
    async def _columns(
        self, stmt: Statement, portal: _Portal | None = None
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

    # -- running one statement
    async def _run(self, stmt: Statement, sql: str, ex: _Exec) -> None:
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

    def _begin(self) -> None:
        if self.block == "explicit":
            self._send_notice(errors.transaction_in_progress())
        else:
            self.block = "explicit"
        self._send(wire.command_complete("BEGIN"))

    async def _commit(self) -> None:
        if self.block is None:
            self._send_notice(errors.no_transaction_in_progress())
            self._send(wire.command_complete("COMMIT"))
            return
        was_failed = self.failed
        await self._end_block(commit=not was_failed)
        self._send(wire.command_complete("ROLLBACK" if was_failed else "COMMIT"))

    async def _rollback(self) -> None:
        if self.block is None:
            self._send_notice(errors.no_transaction_in_progress())
        await self._end_block(commit=False)
        self._send(wire.command_complete("ROLLBACK"))

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

    def _show(self, stmt: ShowVar, ex: _Exec) -> None:
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

    def _rows(
        self,
        columns: Sequence[ColumnDesc],
        rows: Sequence[Sequence[bytes | None]],
        tag: str,
        ex: _Exec,
    ) -> None:
        formats = normalize_formats(ex.result_formats, len(columns))
        if ex.simple:
            self._send(wire.row_description(columns, formats))
        encoders = [
            binary_encoder(c.type_oid, c.name) if f else None
            for c, f in zip(columns, formats, strict=True)
        ]
        for row in rows:
            cells = wire.encode_cells(
                None if v is None else (enc(v) if enc else v)
                for v, enc in zip(row, encoders, strict=True)
            )
            self._send(wire.data_row(len(columns), cells))
        self._send(wire.command_complete(tag))

    def _require_cluster(self) -> None:
        cluster = self.vars.get("cluster") or DEFAULT_CLUSTER
        if cluster not in CLUSTERS:
            raise errors.unknown_cluster(cluster)

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

    # -- SUBSCRIBE machinery
    async def _declare(self, stmt: Declare, params: tuple[str | None, ...]) -> None:
        assert stmt.subscribe is not None
        if self.block is None:
            raise errors.declare_outside_transaction()
        if stmt.name in self.cursors or stmt.name in self.pg_cursors:
            raise errors.duplicate_cursor(stmt.name)
        if self.ops == "read":
            raise errors.read_only_transaction()
        if self.ops == "subscribe":
            raise errors.subscribe_only_transaction()
        self._require_cluster()
        plan = await self.engine.plan(stmt.subscribe)
        self.cursors[stmt.name] = _Cursor(stmt.name, plan, params)
        self.ops = "subscribe"
        self._send(wire.command_complete("DECLARE CURSOR"))

    def _start(self, plan: Plan, params: tuple[str | None, ...]) -> Subscription:
        sub, notices = self.engine.subscribe(plan, params)
        for notice in notices:
            self._send_notice(notice)
        return sub

    async def _fetch(self, cursor: _Cursor, stmt: Fetch, ex: _Exec) -> None:
        layout = cursor.plan.layout
        formats = normalize_formats(ex.result_formats, layout.ncols)
        layout.check_formats(formats)
        if ex.max_rows and (stmt.count is None or ex.max_rows < stmt.count):
            what = "of a FETCH ALL" if stmt.count is None else "< a FETCH's count"
            raise MzError("0A000", f"Execute with max_rows {what} is not supported")
        if cursor.sub is None:
            self._require_cluster()
            cursor.sub = self._start(cursor.plan, cursor.params)
        sub = cursor.sub
        if ex.simple:
            self._send(wire.row_description(layout.columns, formats))
        events = await self._cancellable(_gather(sub, stmt.count, stmt.timeout_ms))
        await self._send_rows(events, _row_encoder(layout, formats))
        self._send(wire.command_complete(f"FETCH {len(events)}"))

    async def _send_rows(
        self, events: Sequence[Event], encode: Callable[[Sequence[Event], bool], bytes]
    ) -> None:
        """Encode and send ``events`` chunk by chunk.

        Writing each chunk as soon as it is encoded lets the client parse one chunk
        while the next is encoded: on two cores the stream runs at the speed of the
        slower side instead of the sum of both.
        """
        for start in range(0, len(events), _CHUNK_EVENTS):
            self._send(encode(events[start : start + _CHUNK_EVENTS], start == 0))
            if self._out_size >= _FLUSH_BYTES:
                await self._flush()

    async def _close_cursor(self, stmt: Close, sql: str) -> None:
        names = list(self.cursors) if stmt.name is None else [stmt.name]
        for name in names:
            cursor = self.cursors.pop(name)
            if cursor.sub is not None:
                self.engine.stop(cursor.sub)
        if stmt.name is None and self.pg_cursors and self.link is not None:
            await self._passthrough(PassThrough(sql), sql)
            self.pg_cursors.clear()
            return
        self._send(wire.command_complete("CLOSE CURSOR"))

    async def _stream_subscribe(self, stmt: Subscribe, ex: _Exec) -> None:
        portal = ex.portal
        if self.ops == "read":
            raise errors.read_only_transaction()
        self._require_cluster()
        plan = (
            portal.plan
            if portal is not None and portal.plan is not None
            else await self.engine.plan(stmt)
        )
        layout = plan.layout
        formats = normalize_formats(ex.result_formats, layout.ncols)
        layout.check_formats(formats)
        if portal is None or portal.sub is None:
            notice = Notice(
                "01000",
                "streaming SUBSCRIBE rows directly requires a client that does not buffer output",
                hint="Wrap your SUBSCRIBE statement in `COPY (SUBSCRIBE ...) TO STDOUT`."
                if self.vars.get("application_name") == "psql"
                else None,
            )
            self._send_notice(notice)
            if ex.simple:
                self._send(wire.row_description(layout.columns, formats))
            sub = self._start(plan, ex.params)
            if portal is not None:
                portal.sub = sub
                portal.plan = plan
            if self.block is not None:
                self.ops = "subscribe"
        else:
            sub = portal.sub
        await self._flush()
        limit = ex.max_rows if ex.max_rows > 0 else None
        sent = 0
        try:
            while limit is None or sent < limit:
                want = None if limit is None else limit - sent
                events = await self._cancellable(_gather(sub, want, None))
                if not events and sub.finished():
                    break
                await self._send_rows(events, _row_encoder(layout, formats))
                await self._cancellable(self._flush())
                sent += len(events)
        except BaseException:
            self.engine.stop(sub)
            if portal is not None:
                portal.sub = None
            raise
        if portal is not None:
            portal.sent += sent
        if limit is not None and sent >= limit and not sub.finished():
            self._send(wire.portal_suspended())
            return
        self.engine.stop(sub)
        total = portal.sent if portal is not None else sent
        if portal is not None:
            portal.sub = None
            portal.done_tag = f"SELECT {total}"
        self._send(wire.command_complete(f"SELECT {total}"))

    async def _copy_subscribe(self, stmt: CopySubscribe) -> None:
        if self.ops == "read":
            raise errors.read_only_transaction()
        self._require_cluster()
        plan = await self.engine.plan(stmt.subscribe)
        layout = plan.layout
        if stmt.binary:
            layout.check_formats((1,) * layout.ncols)
        sub = self._start(plan, ())
        if self.block is not None:
            self.ops = "subscribe"
        self._send(wire.copy_out_response(stmt.binary, layout.ncols))
        await self._flush()
        header_pending = stmt.binary
        count = 0
        try:
            while True:
                events = await self._cancellable(_gather(sub, None, None))
                if events:
                    encode = _copy_encoder(layout, stmt.binary, header_pending)
                    await self._send_rows(events, encode)
                    header_pending = False
                    count += len(events)
                    await self._cancellable(self._flush())
                if sub.finished():
                    break
        finally:
            self.engine.stop(sub)
        if stmt.binary:
            trailer = (
                BINARY_COPY_HEADER + BINARY_COPY_TRAILER if header_pending else BINARY_COPY_TRAILER
            )
            self._send(wire.copy_data(trailer))
        self._send(wire.copy_done())
        self._send(wire.command_complete(f"COPY {count}"))

    async def _cancellable(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` so that a CancelRequest or the client hanging up interrupts it.

        Raises MzError 57014 when canceled, ConnectionResetError when the client left.
        """
        if self._cancel_pending:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise errors.canceled()
        op: asyncio.Future[T] = asyncio.ensure_future(coro)
        self._op = op
        watch: asyncio.Future[Any] = asyncio.ensure_future(self._watch_input())
        try:
            pending: set[asyncio.Future[Any]] = {op, watch}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if op in done:
                return op.result()
            op.cancel()
            with contextlib.suppress(BaseException):
                await op
            raise ConnectionResetError("client closed the connection")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                op.cancel()
                raise
            raise errors.canceled() from None
        finally:
            self._op = None
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _watch_input(self) -> None:
        # Keep reading while an operation blocks: pipelined messages are buffered,
        # and end of input tells us the client is gone.
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                return
            self.frames.feed(data)

    # -- pass-through to PostgreSQL
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
            raise _AlreadyReported()

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
            raise _AlreadyReported()
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


class _AlreadyReported(MzError):
    """PostgreSQL's ErrorResponse has been relayed; only the state change remains."""

    def __init__(self) -> None:
        super().__init__("XX000", "relayed")


async def _gather(sub: Subscription, count: int | None, timeout_ms: float | None) -> list[Event]:
    """Materialize's FETCH: rows up to ``count`` (None: all).

    Without a timeout it waits for the first rows and then takes only what is
    already there; with one it collects until the count or the deadline.
    Raises the subscription's MzError when reached.
    """
    out: list[Event] = []
    if count == 0:
        return out
    loop = asyncio.get_running_loop()
    deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000
    wait_once = timeout_ms is None
    while True:
        got = sub.take(None if count is None else count - len(out))
        if got:
            out.extend(got)
            if count is not None and len(out) >= count:
                return out
            if wait_once:
                deadline = loop.time()
            continue
        if sub.finished():
            return out
        if deadline is None:
            await sub.wait(None)
        else:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            await sub.wait(remaining)


def _row_encoder(
    layout: OutputLayout, formats: tuple[int, ...]
) -> Callable[[Sequence[Event], bool], bytes]:
    def encode(chunk: Sequence[Event], _first: bool) -> bytes:
        return layout.data_rows(chunk, formats)

    return encode


def _copy_encoder(
    layout: OutputLayout, binary: bool, header: bool
) -> Callable[[Sequence[Event], bool], bytes]:
    def encode(chunk: Sequence[Event], first: bool) -> bytes:
        return layout.copy_messages(chunk, binary, header and first)

    return encode


def _raw(kind: bytes, msg: Any) -> bytes:
    """Re-encode a parsed frontend message for forwarding."""
    if kind == b"P":
        body = (
            msg.name.encode()
            + b"\0"
            + msg.sql.encode()
            + b"\0"
            + struct.pack("!h", len(msg.param_types))
            + b"".join(struct.pack("!I", t) for t in msg.param_types)
        )
    elif kind == b"B":
        parts = [msg.portal.encode() + b"\0", msg.statement.encode() + b"\0"]
        parts.append(struct.pack("!h", len(msg.param_formats)))
        parts.extend(struct.pack("!h", f) for f in msg.param_formats)
        parts.append(struct.pack("!h", len(msg.params)))
        for value in msg.params:
            parts.append(
                struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
            )
        parts.append(struct.pack("!h", len(msg.result_formats)))
        parts.extend(struct.pack("!h", f) for f in msg.result_formats)
        body = b"".join(parts)
    elif kind == b"E":
        body = msg.portal.encode() + b"\0" + struct.pack("!i", msg.max_rows)
    else:  # D, C
        body = msg.kind.encode() + msg.name.encode() + b"\0"
    return wire.message(kind, body)


def _param_format(formats: tuple[int, ...], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def _at(values: tuple[int, ...], i: int) -> int:
    return values[i] if i < len(values) else 0


_BINARY_PARAM: dict[int, Callable[[bytes], str]] = {
    20: lambda b: str(struct.unpack("!q", b)[0]),
    21: lambda b: str(struct.unpack("!h", b)[0]),
    23: lambda b: str(struct.unpack("!i", b)[0]),
    25: lambda b: b.decode(),
    1043: lambda b: b.decode(),
}


def _decode_param(value: bytes | None, fmt: int, oid: int) -> str | None:
    if value is None:
        return None
    if fmt == 0:
        return value.decode("utf-8")
    if oid == 1700:
        return _decode_numeric(value)
    decoder = _BINARY_PARAM.get(oid)
    if decoder is None:
        raise MzError("22P03", f"unsupported binary parameter of type {oid}")
    return decoder(value)


def _decode_numeric(value: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", value, 0)
    digits = struct.unpack_from(f"!{ndigits}h", value, 8)
    total = 0
    for i, d in enumerate(digits):
        total += d * 10000 ** (weight - i) if weight - i >= 0 else 0
    del dscale
    return ("-" if sign == 0x4000 else "") + str(total)


def _param_oids(prep: _Prepared) -> list[int]:
    n = 0
    for tok in tokenize(prep.sql):
        if tok.kind == "param":
            n = max(n, int(tok.text))
    oids = list(prep.param_types[:n])
    oids += [OID["text"]] * (n - len(oids))
    return [o or OID["text"] for o in oids]


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


def _parse_options(value: str) -> list[tuple[str, str]]:
    """``options`` startup parameter: ``--cluster=x``, ``-c cluster=x``, ``-ccluster=x``."""
    out: list[tuple[str, str]] = []
    tokens = value.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "-c" and i + 1 < len(tokens):
            tok = "-c" + tokens[i + 1]
            i += 1
        for prefix in ("--", "-c"):
            if tok.startswith(prefix) and "=" in tok:
                key, _, val = tok[len(prefix) :].partition("=")
                out.append((key.replace("-", "_"), val))
                break
        i += 1
    return out


def _format_ms(ms: int) -> str:
    if ms == 0:
        return "0"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
