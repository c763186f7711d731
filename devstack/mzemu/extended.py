"""The extended query protocol: Parse, Bind, Describe, Execute, Close, Sync.

Statements PostgreSQL answers are relayed message by message (re-encoded by
:func:`_raw`) and their errors surface at the next Sync, as PostgreSQL's do; the
rest run here. Parameters arrive as text or binary (int2/4/8, text, numeric).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from devstack.mzemu import errors, wire
from devstack.mzemu.connection import Exec, Portal, Prepared
from devstack.mzemu.errors import MzError
from devstack.mzemu.execute import Executor
from devstack.mzemu.output import normalize_formats
from devstack.mzemu.statements import (
    Close,
    Commit,
    Declare,
    Fetch,
    PassThrough,
    Rollback,
    ShowVar,
    Statement,
    parse_statement,
    split_statements,
    tokenize,
)
from devstack.mzemu.values import OID

__all__ = ["ExtendedProtocol"]

_SYNC = wire.message(b"S")


class ExtendedProtocol(Executor):
    """Parse, Bind, Describe, Execute, Close and Sync."""

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
        self.prepared[msg.name] = Prepared(text, stmt, msg.param_types, passthrough)

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

    def _prepared(self, name: str) -> Prepared:
        """The prepared statement ``name``; MzError 26000 as Materialize when there is none."""
        prep = self.prepared.get(name)
        if prep is None:
            raise MzError("26000", f"prepared statement {errors.quoted(name)} does not exist")
        return prep

    def _portal(self, name: str) -> Portal:
        """The portal ``name``; MzError 34000 as Materialize when there is none."""
        portal = self.portals.get(name)
        if portal is None:
            raise MzError("34000", f"portal {errors.quoted(name)} does not exist")
        return portal

    async def _bind(self, msg: wire.Bind) -> None:
        prep = self._prepared(msg.statement)
        if prep.passthrough:
            await self._relay_extended(_raw(b"B", msg), b"2")
            self.portals[msg.portal] = Portal(prep, passthrough=True)
            return
        params = tuple(
            _decode_param(value, _param_format(msg.param_formats, i), _at(prep.param_types, i))
            for i, value in enumerate(msg.params)
        )
        old = self.portals.pop(msg.portal, None)
        if old is not None and old.sub is not None:
            self.engine.stop(old.sub)
        self.portals[msg.portal] = Portal(prep, params, msg.result_formats)
        self._send(wire.bind_complete())

    async def _describe(self, msg: wire.Describe) -> None:
        if msg.kind == "S":
            prep = self._prepared(msg.name)
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
        portal = self._portal(msg.name)
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
        portal = self._portal(msg.portal)
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
            Exec(False, portal.params, portal.result_formats, msg.max_rows, portal),
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


def _param_oids(prep: Prepared) -> list[int]:
    n = 0
    for tok in tokenize(prep.sql):
        if tok.kind == "param":
            n = max(n, int(tok.text))
    oids = list(prep.param_types[:n])
    oids += [OID["text"]] * (n - len(oids))
    return [o or OID["text"] for o in oids]
