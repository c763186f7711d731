"""Text-to-binary value encodings, checked against psycopg's own binary loaders."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from psycopg.pq import Format

from devstack.mzemu.errors import MzError
from devstack.mzemu.values import OID, binary_encoder, copy_text_escape, encode_numeric

_tx = Transformer()
_UUID_TEXT = "12345678-1234-5678-1234-567812345678"


def load_binary(oid: int, data: bytes) -> object:
    return _tx.get_loader(oid, Format.BINARY).load(data)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**30),
                max_value=10**30)
)  # fmt: skip
def test_numeric_round_trips_through_psycopg(value: Decimal) -> None:
    text = format(value, "f")
    assert load_binary(OID["numeric"], encode_numeric(text)) == Decimal(text)


@pytest.mark.parametrize("text", ["0", "0.00", "-0.5", "10000", "1795826786930", "12.50", "NaN"])
def test_numeric_edge_cases(text: str) -> None:
    loaded = load_binary(OID["numeric"], encode_numeric(text))
    assert isinstance(loaded, Decimal)
    if text == "NaN":
        assert loaded.is_nan()
    else:
        assert loaded == Decimal(text)
        assert str(loaded) == text  # the scale survives


@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.sampled_from([0, 3600, -16200, 19800]),
)
def test_timestamptz_round_trips(moment: dt.datetime, offset_s: int) -> None:
    zone = dt.timezone(dt.timedelta(seconds=offset_s))
    aware = moment.replace(tzinfo=zone)
    sign = "+" if offset_s >= 0 else "-"
    hh, rem = divmod(abs(offset_s), 3600)
    text = aware.strftime("%Y-%m-%d %H:%M:%S") + (
        f".{aware.microsecond:06d}" if aware.microsecond else ""
    )
    text += f"{sign}{hh:02d}" + (f":{rem // 60:02d}" if rem else "")
    loaded = load_binary(OID["timestamptz"], binary_encoder(OID["timestamptz"])(text.encode()))
    assert loaded == aware


def test_other_types_round_trip() -> None:
    cases: list[tuple[str, bytes, object]] = [
        ("int8", b"-9000000000", -9000000000),
        ("int4", b"42", 42),
        ("int2", b"-7", -7),
        ("bool", b"t", True),
        ("bool", b"f", False),
        ("float8", b"1.5", 1.5),
        ("text", "héllo".encode(), "héllo"),
        ("date", b"2024-02-29", dt.date(2024, 2, 29)),
        ("timestamp", b"2024-02-29 12:00:01.5", dt.datetime(2024, 2, 29, 12, 0, 1, 500000)),
        ("uuid", b"12345678-1234-5678-1234-567812345678", uuid.UUID(_UUID_TEXT)),
        ("jsonb", b'{"a": 1}', {"a": 1}),
    ]  # fmt: skip
    for name, text, expected in cases:
        assert load_binary(OID[name], binary_encoder(OID[name])(text)) == expected, name


def test_unsupported_binary_type_is_refused() -> None:
    with pytest.raises(MzError) as info:
        binary_encoder(OID["interval"], "interval")
    assert info.value.sqlstate == "0A000"


def test_copy_text_escaping() -> None:
    assert copy_text_escape(b"plain") == b"plain"
    assert copy_text_escape(b"a\tb\nc\\d\re") == b"a\\tb\\nc\\\\d\\re"
