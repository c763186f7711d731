"""Column types and value encodings: PostgreSQL text form to binary form and COPY forms.

The emulator reads every value of the view as PostgreSQL's own text output (so the
text wire format is byte-for-byte what PostgreSQL would send) and derives the binary
wire format and the COPY formats from that text when a client asks for them.
Pure module: no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devstack.mzemu.errors import MzError

__all__ = [
    "BINARY_COPY_HEADER",
    "BINARY_COPY_TRAILER",
    "OID",
    "TypeInfo",
    "binary_encoder",
    "copy_text_escape",
    "copy_text_line",
    "encode_binary_values",
    "encode_numeric",
    "needs_copy_escape",
    "type_info",
]

# Type OIDs of PostgreSQL, plus Materialize's mz_timestamp.
OID = {
    "bool": 16,
    "bytea": 17,
    "char": 18,
    "name": 19,
    "int8": 20,
    "int2": 21,
    "int4": 23,
    "text": 25,
    "oid": 26,
    "json": 114,
    "float4": 700,
    "float8": 701,
    "unknown": 705,
    "bpchar": 1042,
    "varchar": 1043,
    "date": 1082,
    "time": 1083,
    "timestamp": 1114,
    "timestamptz": 1184,
    "interval": 1186,
    "numeric": 1700,
    "uuid": 2950,
    "jsonb": 3802,
    "mz_timestamp": 16552,
}

_TYPLEN = {16: 1, 18: 1, 19: 64, 20: 8, 21: 2, 23: 4, 26: 4, 700: 4, 701: 8, 1082: 4}
_TYPLEN.update({1083: 8, 1114: 8, 1184: 8, 1186: 16, 2950: 16, 16552: 8})


@dataclass(frozen=True)
class TypeInfo:
    """What a RowDescription says about a column's type."""

    oid: int
    typlen: int
    typmod: int = -1


def type_info(oid: int, typmod: int = -1) -> TypeInfo:
    return TypeInfo(oid, _TYPLEN.get(oid, -1), typmod)


_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_PG_EPOCH_ORDINAL = dt.date(2000, 1, 1).toordinal()
_I64_MAX = (1 << 63) - 1
_I32_MAX = (1 << 31) - 1


def encode_numeric(text: str) -> bytes:
    """PostgreSQL's binary numeric from its text form (e.g. ``-12.340``, ``NaN``).

    Raises ValueError on text that is not a plain decimal.
    """
    special = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000}
    if text in special:
        return struct.pack("!hhHh", 0, 0, special[text], 0)
    sign = 0
    body = text
    if body.startswith("-"):
        sign, body = 0x4000, body[1:]
    elif body.startswith("+"):
        body = body[1:]
    whole, _, frac = body.partition(".")
    if not (whole or frac) or not (whole + frac).isdigit():
        raise ValueError(f"not a numeric: {text!r}")
    dscale = len(frac)
    whole = whole.lstrip("0")
    pad_whole = (-len(whole)) % 4
    whole = "0" * pad_whole + whole
    frac = frac + "0" * ((-len(frac)) % 4)
    digits = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)]
    weight = len(digits) - 1
    digits += [int(frac[i : i + 4]) for i in range(0, len(frac), 4)]
    while digits and digits[0] == 0:
        digits.pop(0)
        weight -= 1
    while digits and digits[-1] == 0:
        digits.pop()
    if not digits:
        weight = 0
        sign = 0
    return struct.pack(f"!hhHh{len(digits)}h", len(digits), weight, sign, dscale, *digits)


def _parse_date(text: str) -> int:
    """Days since 2000-01-01 of an ISO date (``2024-05-06`` or ``... BC``)."""
    bc = text.endswith(" BC")
    if bc:
        text = text[:-3]
    year_s, month_s, day_s = text.split("-")
    year = int(year_s)
    if bc:
        year = 1 - year
    if year < 1:
        # datetime cannot represent BC dates; astronomical years below 1 are rare enough
        # in this emulator's data to refuse rather than miscompute.
        raise ValueError(f"BC dates are not supported in binary format: {text!r}")
    return dt.date(year, int(month_s), int(day_s)).toordinal() - _PG_EPOCH_ORDINAL


def _parse_time(text: str) -> int:
    """Microseconds since midnight of ``HH:MM:SS[.ffffff]``."""
    hms, _, frac = text.partition(".")
    h, m, s = (int(part) for part in hms.split(":"))
    micros = int((frac + "000000")[:6]) if frac else 0
    return ((h * 60 + m) * 60 + s) * 1_000_000 + micros


def _split_offset(text: str) -> tuple[str, int]:
    """Split ``... +05:30`` style offsets off a timestamptz; offset in seconds."""
    for i in range(len(text) - 1, 9, -1):
        if text[i] in "+-":
            parts = text[i + 1 :].split(":")
            seconds = int(parts[0]) * 3600
            if len(parts) > 1:
                seconds += int(parts[1]) * 60
            if len(parts) > 2:
                seconds += int(parts[2])
            return text[:i], -seconds if text[i] == "-" else seconds
    raise ValueError(f"timestamptz without offset: {text!r}")


def _timestamp_micros(text: str, with_zone: bool) -> int:
    if text == "infinity":
        return _I64_MAX
    if text == "-infinity":
        return -_I64_MAX - 1
    offset = 0
    if with_zone:
        text, offset = _split_offset(text)
    date_s, _, time_s = text.partition(" ")
    days = _parse_date(date_s)
    return days * 86_400_000_000 + _parse_time(time_s) - offset * 1_000_000


def _encode_bool(v: bytes) -> bytes:
    return b"\x01" if v == b"t" else b"\x00"


def _encode_date(v: bytes) -> bytes:
    text = v.decode()
    if text == "infinity":
        return _I32.pack(_I32_MAX)
    if text == "-infinity":
        return _I32.pack(-_I32_MAX - 1)
    return _I32.pack(_parse_date(text))


def _encode_bytea(v: bytes) -> bytes:
    if v.startswith(b"\\x"):
        return bytes.fromhex(v[2:].decode())
    raise ValueError("bytea in escape format is not supported")


_ENCODERS: dict[int, Callable[[bytes], bytes]] = {
    16: _encode_bool,
    17: _encode_bytea,
    18: lambda v: v[:1],
    20: lambda v: _I64.pack(int(v)),
    21: lambda v: _I16.pack(int(v)),
    23: lambda v: _I32.pack(int(v)),
    26: lambda v: struct.pack("!I", int(v)),
    700: lambda v: struct.pack("!f", float(v)),
    701: lambda v: struct.pack("!d", float(v)),
    1082: _encode_date,
    1083: lambda v: _I64.pack(_parse_time(v.decode())),
    1114: lambda v: _I64.pack(_timestamp_micros(v.decode(), with_zone=False)),
    1184: lambda v: _I64.pack(_timestamp_micros(v.decode(), with_zone=True)),
    1700: lambda v: encode_numeric(v.decode()),
    2950: lambda v: bytes.fromhex(v.decode().replace("-", "")),
    3802: lambda v: b"\x01" + v,
}
# Types whose binary form is their text bytes.
for _oid in (19, 25, 114, 705, 1042, 1043, 16552):
    _ENCODERS[_oid] = bytes


def binary_encoder(oid: int, type_name: str = "") -> Callable[[bytes], bytes]:
    """The text-to-binary converter for ``oid``.

    Raises MzError (0A000) for a type whose binary form the emulator does not produce.
    """
    encoder = _ENCODERS.get(oid)
    if encoder is None:
        raise MzError("0A000", f"binary encoding of type {type_name or oid} is not implemented")
    return encoder


def encode_binary_values(
    values: Sequence[bytes | None], encoders: Sequence[Callable[[bytes], bytes]]
) -> list[bytes | None]:
    return [None if v is None else enc(v) for v, enc in zip(values, encoders, strict=True)]


_COPY_ESCAPES = {
    ord("\\"): b"\\\\",
    8: b"\\b",
    9: b"\\t",
    10: b"\\n",
    11: b"\\v",
    12: b"\\f",
    13: b"\\r",
}


_NEEDS_ESCAPE = re.compile(rb"[\\\x08-\x0d]")


def needs_copy_escape(value: bytes) -> bool:
    return _NEEDS_ESCAPE.search(value) is not None


_SPECIAL_TEXT = re.compile(r"[\\\x08-\x0d]")


def copy_text_line(values: Sequence[str | None]) -> bytes:
    """A row's COPY text body (tab-separated, ``\\N`` for NULL, escaped) from str values."""
    if any(v is not None and _SPECIAL_TEXT.search(v) for v in values):
        return b"\t".join(b"\\N" if v is None else copy_text_escape(v.encode()) for v in values)
    return "\t".join(["\\N" if v is None else v for v in values]).encode()


def copy_text_escape(value: bytes) -> bytes:
    """One value in COPY text format (PostgreSQL's CopyAttributeOutText escapes)."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return b"".join(_COPY_ESCAPES.get(b, bytes((b,))) for b in value)


BINARY_COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
BINARY_COPY_TRAILER = b"\xff\xff"
