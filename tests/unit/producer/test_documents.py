"""producer/documents.py: rows → the JSON bytes OpenSearch receives."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.entries import VERSION_FIELD
from searchsync.producer.documents import ColumnKind, DocumentEncoder, iso_timestamp, kind_of_type

COLUMNS = ["order_id", "order_total_amount", "delivery_eta", "is_rush", "items", "note"]
KINDS: list[ColumnKind] = ["plain", "number", "timestamptz", "plain", "json", "plain"]


def test_document_is_json_with_numbers_iso_dates_and_version_last() -> None:
    encoder = DocumentEncoder(COLUMNS, KINDS)
    doc = encoder.encode(
        ("o1", "12.50", "2024-05-01 10:00:00.25+00", True, '{"n": 2}', 'say "hi"'), 1700000000123
    )
    parsed = json.loads(doc)
    assert parsed == {
        "order_id": "o1",
        "order_total_amount": 12.5,
        "delivery_eta": "2024-05-01T10:00:00.25+00:00",
        "is_rush": True,
        "items": {"n": 2},
        "note": 'say "hi"',
        VERSION_FIELD: 1700000000123,
    }
    assert list(parsed)[-1] == VERSION_FIELD
    assert b'"order_total_amount":12.50' in doc  # the numeric text itself, no float rounding


def test_nulls_and_non_finite_values_become_null() -> None:
    encoder = DocumentEncoder(COLUMNS, KINDS)
    parsed = json.loads(encoder.encode((None, "NaN", "infinity", None, None, None), 1))
    assert parsed["order_total_amount"] is None
    assert parsed["delivery_eta"] is None
    assert parsed["order_id"] is None


def test_default_loader_values_encode_the_same() -> None:
    # A connection without the text loaders (Decimal, datetime) gives the same document.
    encoder = DocumentEncoder(["amount", "at"], ["number", "timestamptz"])
    as_text = json.loads(encoder.encode(("12.50", "2024-05-01 10:00:00+00"), 1))
    loaded = json.loads(
        encoder.encode((Decimal("12.50"), dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)), 1)
    )
    assert as_text["amount"] == loaded["amount"] == 12.5
    assert dt.datetime.fromisoformat(as_text["at"]) == dt.datetime.fromisoformat(
        loaded["at"].replace("Z", "+00:00")
    )


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-05-01 10:00:00+00", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01 10:00:00.123456-07", "2024-05-01T10:00:00.123456-07:00"),
        ("2024-05-01 10:00:00+05:30", "2024-05-01T10:00:00+05:30"),
        ("1890-01-01 00:00:00+00:53:28", "1890-01-01T00:00:00+00:53:28"),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00"),
        ("infinity", None),
        ("-infinity", None),
    ],
)
def test_iso_timestamp(text: str, iso: str | None) -> None:
    assert iso_timestamp(text) == iso


fixed_offsets = st.builds(
    dt.timezone,
    st.integers(-15 * 3600, 15 * 3600).map(lambda s: dt.timedelta(seconds=s)),
)


@given(st.datetimes(timezones=fixed_offsets, min_value=dt.datetime(1000, 1, 1)))
def test_iso_timestamp_parses_back_to_the_same_instant(value: dt.datetime) -> None:
    offset = value.utcoffset()
    assert offset is not None
    # PostgreSQL's text form: "YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]"
    text = value.isoformat(sep=" ")
    sign, rest = text[-6], text[-5:]
    if rest.endswith(":00") and ":" not in rest[:2]:
        text = text[:-6] + sign + rest[:2]
    iso = iso_timestamp(text)
    assert iso is not None
    assert dt.datetime.fromisoformat(iso) == value


def test_kinds_from_type_oids() -> None:
    assert kind_of_type(1700) == "number"
    assert kind_of_type(1184) == "timestamptz"
    assert kind_of_type(3802) == "json"
    assert kind_of_type(25) == "plain"


def test_column_named_like_the_version_field_is_refused() -> None:
    with pytest.raises(ValueError, match=VERSION_FIELD):
        DocumentEncoder(["order_id", VERSION_FIELD], ["plain", "plain"])


def test_any_column_name_works() -> None:
    encoder = DocumentEncoder(["class", "has space", "ünï"], ["plain", "plain", "plain"])
    assert msgspec.json.decode(encoder.encode((1, 2, 3), 9)) == {
        "class": 1,
        "has space": 2,
        "ünï": 3,
        VERSION_FIELD: 9,
    }


def test_dead_letter_array_holds_every_row() -> None:
    encoder = DocumentEncoder(["order_id", "task"], ["plain", "plain"])
    rows = [("o1", "a"), ("o1", "b")]
    assert json.loads(encoder.encode_array(rows, 5)) == [
        {"order_id": "o1", "task": "a", VERSION_FIELD: 5},
        {"order_id": "o1", "task": "b", VERSION_FIELD: 5},
    ]


def _pg_timestamptz(value: dt.datetime) -> str:
    """PostgreSQL's text form of a timestamptz: ``YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]``."""
    text = value.isoformat(sep=" ")
    sign, rest = text[-6], text[-5:]
    if rest.endswith(":00") and ":" not in rest[:2]:
        text = text[:-6] + sign + rest[:2]
    return text


pg_numerics = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: format(d, "f")),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "-0.5", "12.50"]),
)
pg_timestamps = st.one_of(
    st.datetimes(timezones=fixed_offsets, min_value=dt.datetime(1000, 1, 1)).map(_pg_timestamptz),
    st.sampled_from(["infinity", "-infinity"]),
)
MIXED_COLUMNS = ["t", "n", "ts", "t2", "j"]
MIXED_KINDS: list[ColumnKind] = ["plain", "number", "timestamptz", "plain", "json"]


@given(
    st.tuples(
        st.none() | st.text(),  # any text: quotes, backslashes, control characters, non-ASCII
        st.none() | pg_numerics,
        st.none() | pg_timestamps,
        st.none() | st.text(alphabet=st.characters(codec="utf-8")),
        st.none() | st.sampled_from(['{"a": [1, "x\\"y"]}', "[]", "null", '"s"']),
    ),
    st.integers(0, 2**62),
)
def test_documents_decode_to_the_values_a_reference_encoder_gives(
    values: tuple[str | None, ...], version: int
) -> None:
    text, number, stamp, text2, blob = values
    encoder = DocumentEncoder(MIXED_COLUMNS, MIXED_KINDS)
    doc = encoder.encode(values, version)
    parsed = json.loads(doc, parse_float=Decimal, parse_int=Decimal)
    assert list(parsed) == [*MIXED_COLUMNS, VERSION_FIELD]
    assert parsed["t"] == text
    assert parsed["t2"] == text2
    if number is None or number in ("NaN", "Infinity", "-Infinity"):
        assert parsed["n"] is None
    else:
        assert parsed["n"] == Decimal(number)
    if stamp is None or stamp.endswith("infinity"):
        assert parsed["ts"] is None
    else:
        assert "T" in parsed["ts"]
        assert dt.datetime.fromisoformat(parsed["ts"]) == dt.datetime.fromisoformat(stamp)
    assert parsed["j"] == (None if blob is None else json.loads(blob, parse_int=Decimal))
    assert parsed[VERSION_FIELD] == version
    # The generated per-row function and the per-value converters agree byte for byte.
    assert doc == encoder._robust(values, version)
