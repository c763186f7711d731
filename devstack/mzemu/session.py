"""One client connection: Materialize's pgwire front end over the emulator's engine.

Startup (SSLRequest answered ``N``, cleartext password), the message loop, the
simple query protocol, cancellation and the idle-in-transaction timeout. The rest
is built in layers, one module per concern (see ``connection``): session variables,
transaction blocks, pass-through to PostgreSQL (``backend.py``), SUBSCRIBE cursors,
streamed SUBSCRIBE and COPY, running one statement, the extended query protocol.

Transaction blocks: ``None`` (autocommit), ``"implicit"`` (several statements in
one simple Query) or ``"explicit"`` (BEGIN). A block that ran a SUBSCRIBE allows
only FETCH, CLOSE, SET/SHOW and the end of the block; a block that read through
PostgreSQL cannot DECLARE a SUBSCRIBE (Materialize's read-only transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from devstack.mzemu import errors, wire
from devstack.mzemu.connection import AlreadyReported, Exec
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.extended import ExtendedProtocol

# The wire unit tests import _raw from here.
from devstack.mzemu.extended import _raw as _raw  # noqa: PLC0414
from devstack.mzemu.statements import (
    Commit,
    Rollback,
    parse_interval_ms,
    parse_statement,
    split_statements,
)
from devstack.mzemu.variables import NOTIFY

__all__ = ["Session"]

log = logging.getLogger("mzemu.session")


class Session(ExtendedProtocol):
    """Serves one client connection until it ends. Never raises out of :meth:`run`."""

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
        if not self.engine.privileges.authenticate(self.user, password):
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
        except AlreadyReported:
            self._ext_failed = True
        except MzError as err:
            self._send_error(err)
            await self._flush()
            self._ext_failed = True
            await self._on_error()
        await self._maybe_flush()

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
                await self._run(stmt, text, Exec(simple=True))
            except AlreadyReported:
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
