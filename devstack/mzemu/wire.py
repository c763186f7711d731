"""PostgreSQL wire protocol v3: framing and message encoding, both directions.

Pure module: it turns bytes into messages and messages into bytes; sockets live in
``session.py`` and ``backend.py``. Only what psycopg 3, libpq (psql) and the
emulator's own PostgreSQL link need is here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devstack.mzemu.errors import MzError, Notice

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "PROTOCOL_V3",
    "SSL_REQUEST_CODE",
    "Bind",
    "Close",
    "ColumnDesc",
    "Describe",
    "Execute",
    "FrameReader",
    "Parse",
    "StartupPacket",
    "authentication_cleartext",
    "authentication_ok",
    "backend_key_data",
    "bind_complete",
    "close_complete",
    "command_complete",
    "copy_data",
    "copy_done",
    "copy_out_response",
    "data_row",
    "empty_query_response",
    "encode_cells",
    "error_response",
    "message",
    "no_data",
    "notice_response",
    "parameter_description",
    "parameter_status",
    "parse_bind",
    "parse_close",
    "parse_complete",
    "parse_describe",
    "parse_error_fields",
    "parse_execute",
    "parse_parse",
    "parse_startup",
    "portal_suspended",
    "ready_for_query",
    "row_description",
]

PROTOCOL_V3 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HEADER = struct.Struct("!ci")
_MAX_MESSAGE = 1 << 30


class FrameReader:
    """Accumulates bytes and yields complete ``(type, body)`` messages.

    Raises MzError (08P01) on a length that cannot be a message.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_message(self) -> tuple[bytes, bytes] | None:
        buf = self._buf
        if len(buf) < 5:
            return None
        kind, length = _HEADER.unpack_from(buf, 0)
        if length < 4 or length > _MAX_MESSAGE:
            raise MzError("08P01", f"invalid message length {length}", severity="FATAL")
        end = 1 + length
        if len(buf) < end:
            return None
        body = bytes(buf[5:end])
        del buf[:end]
        return kind, body

    def next_startup(self) -> bytes | None:
        """A startup-phase packet (no type byte): its body after the length."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _I32.unpack_from(buf, 0)
        if length < 8 or length > 10_000:
            raise MzError("08P01", f"invalid startup packet length {length}", severity="FATAL")
        if len(buf) < length:
            return None
        body = bytes(buf[4:length])
        del buf[:length]
        return body


@dataclass(frozen=True)
class StartupPacket:
    code: int
    params: dict[str, str]
    cancel_pid: int = 0
    cancel_secret: int = 0


def parse_startup(body: bytes) -> StartupPacket:
    """Decode a startup packet body (after the length). Raises MzError on garbage."""
    (code,) = _I32.unpack_from(body, 0)
    if code == CANCEL_REQUEST_CODE:
        if len(body) < 12:
            raise MzError("08P01", "invalid cancel request", severity="FATAL")
        pid, secret = struct.unpack_from("!ii", body, 4)
        return StartupPacket(code, {}, pid, secret)
    if code != PROTOCOL_V3:
        return StartupPacket(code, {})
    parts = body[4:].split(b"\0")
    params: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        if not parts[i]:
            break
        params[parts[i].decode("utf-8", "replace")] = parts[i + 1].decode("utf-8", "replace")
    return StartupPacket(code, params)


# --- frontend messages -----------------------------------------------------------------


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def cstr(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        value = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u32(self) -> int:
        (v,) = struct.unpack_from("!I", self.buf, self.pos)
        self.pos += 4
        return int(v)

    def raw(self, n: int) -> bytes:
        value = self.buf[self.pos : self.pos + n]
        self.pos += n
        return value

    def byte(self) -> bytes:
        value = self.buf[self.pos : self.pos + 1]
        self.pos += 1
        return value


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True)
class Close:
    kind: str
    name: str


def _protocol(fn_name: str, exc: Exception) -> MzError:
    return MzError("08P01", f"invalid {fn_name} message: {exc}")


def parse_parse(body: bytes) -> Parse:
    try:
        c = _Cursor(body)
        name, sql = c.cstr(), c.cstr()
        n = c.i16()
        return Parse(name, sql, tuple(c.u32() for _ in range(n)))
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _protocol("Parse", exc) from exc


def parse_bind(body: bytes) -> Bind:
    try:
        c = _Cursor(body)
        portal, statement = c.cstr(), c.cstr()
        formats = tuple(c.i16() for _ in range(c.i16()))
        params: list[bytes | None] = []
        for _ in range(c.i16()):
            length = c.i32()
            params.append(None if length < 0 else c.raw(length))
        results = tuple(c.i16() for _ in range(c.i16()))
        return Bind(portal, statement, formats, tuple(params), results)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _protocol("Bind", exc) from exc


def parse_describe(body: bytes) -> Describe:
    try:
        c = _Cursor(body)
        return Describe(c.byte().decode(), c.cstr())
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _protocol("Describe", exc) from exc


def parse_execute(body: bytes) -> Execute:
    try:
        c = _Cursor(body)
        return Execute(c.cstr(), c.i32())
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _protocol("Execute", exc) from exc


def parse_close(body: bytes) -> Close:
    try:
        c = _Cursor(body)
        return Close(c.byte().decode(), c.cstr())
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise _protocol("Close", exc) from exc


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body, keyed by their one-letter code."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.index(b"\0", pos + 1)
        fields[code] = body[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


# --- backend messages ------------------------------------------------------------------


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def _cstr(s: str) -> bytes:
    return s.encode("utf-8") + b"\0"


def authentication_ok() -> bytes:
    return message(b"R", _I32.pack(0))


def authentication_cleartext() -> bytes:
    return message(b"R", _I32.pack(3))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def parse_complete() -> bytes:
    return b"1\0\0\0\x04"


def bind_complete() -> bytes:
    return b"2\0\0\0\x04"


def close_complete() -> bytes:
    return b"3\0\0\0\x04"


def no_data() -> bytes:
    return b"n\0\0\0\x04"


def portal_suspended() -> bytes:
    return b"s\0\0\0\x04"


def empty_query_response() -> bytes:
    return b"I\0\0\0\x04"


def copy_done() -> bytes:
    return b"c\0\0\0\x04"


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", _I16.pack(len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


@dataclass(frozen=True)
class ColumnDesc:
    """One RowDescription field."""

    name: str
    type_oid: int
    type_len: int = -1
    type_mod: int = -1


def row_description(columns: Sequence[ColumnDesc], formats: Sequence[int]) -> bytes:
    parts = [_I16.pack(len(columns))]
    for col, fmt in zip(columns, formats, strict=True):
        parts.append(_cstr(col.name))
        parts.append(struct.pack("!IhIhih", 0, 0, col.type_oid, col.type_len, col.type_mod, fmt))
    return message(b"T", b"".join(parts))


_NULL_CELL = _I32.pack(-1)


def encode_cells(values: Iterable[bytes | None]) -> bytes:
    """The column part of a DataRow (without the column count): length-prefixed values."""
    pack = _I32.pack
    return b"".join(_NULL_CELL if v is None else pack(len(v)) + v for v in values)


def data_row(ncols: int, cells: bytes) -> bytes:
    return b"D" + _I32.pack(len(cells) + 6) + _I16.pack(ncols) + cells


def copy_out_response(binary: bool, ncols: int) -> bytes:
    fmt = 1 if binary else 0
    return message(b"H", struct.pack("!bh", fmt, ncols) + _I16.pack(fmt) * ncols)


def copy_data(payload: bytes) -> bytes:
    return b"d" + _I32.pack(len(payload) + 4) + payload


def _fields(
    *,
    severity: str,
    sqlstate: str,
    text: str,
    detail: str | None,
    hint: str | None,
    position: int | None,
) -> bytes:
    parts = [b"S" + _cstr(severity), b"V" + _cstr(severity), b"C" + _cstr(sqlstate)]
    parts.append(b"M" + _cstr(text))
    if detail:
        parts.append(b"D" + _cstr(detail))
    if hint:
        parts.append(b"H" + _cstr(hint))
    if position is not None:
        parts.append(b"P" + _cstr(str(position)))
    return b"".join(parts) + b"\0"


def error_response(err: MzError) -> bytes:
    return message(
        b"E",
        _fields(
            severity=err.severity,
            sqlstate=err.sqlstate,
            text=err.message,
            detail=err.detail,
            hint=err.hint,
            position=err.position,
        ),
    )


def notice_response(notice: Notice) -> bytes:
    return message(
        b"N",
        _fields(
            severity=notice.severity,
            sqlstate=notice.sqlstate,
            text=notice.message,
            detail=notice.detail,
            hint=notice.hint,
            position=None,
        ),
    )
