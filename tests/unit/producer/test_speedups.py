"""producer/_speedups.c: the C path gives exactly what the Python path gives.

Properties over arbitrary rows, each path run on the same input in one process:
documents (``DocumentWriter`` against the generated Python function), snapshot
entries (``pack_upserts`` against ``_Grouper``, each change in the partition
common.partition.partition_of gives), held snapshot rows
(``hold_snapshot_rows`` against the Python loop). Errors must match too (type and
message). No services.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchsync.common.entries import VERSION_FIELD
from searchsync.common.partition import partition_of
from searchsync.producer import native
from searchsync.producer.batches import Entry, snapshot_entries
from searchsync.producer.consolidate import Consolidator
from searchsync.producer.documents import ColumnKind, DocumentEncoder
from searchsync.producer.rows import Rejected
from tests.unit.producer.test_consolidate import SUBSCRIBE_LAYOUT, subscribe_rows
from tests.unit.producer.test_documents import pg_numerics, pg_timestamps

KINDS: tuple[ColumnKind, ...] = get_args(ColumnKind)


def test_the_extension_is_built() -> None:
    # The other tests here compare the two paths; without the C one they compare nothing.
    assert native.speedups is not None, (
        "searchsync.producer._speedups is not built: pip install -e ."
    )


speedups = native.speedups

# Text as psycopg gives it (valid UTF-8: no lone surrogates), leaning on what JSON
# escapes, what the timestamp rewrite looks at, and lengths around 8-byte words.
awkward = st.sampled_from(list('"\\\x00\x01\x08\t\n\x0c\r\x1f\x7f é\u2028😀+-:Ti0 '))
texts = st.text(alphabet=awkward | st.characters(codec="utf-8"), max_size=40)
long_texts = st.text(alphabet=awkward | st.characters(codec="utf-8"), min_size=300, max_size=1200)
# Not what the text loaders give, but what a connection without them (or another
# view) could: the C path must hand these to the Python path or write them the same.
others = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(),
    st.decimals(allow_nan=True),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
    st.lists(st.integers(), max_size=2),
)
# Whole-hour offsets (the ones written "+HH", which get ":00"): rare in pg_timestamps.
hour_offsets = st.builds(
    "2024-05-01 10:00:00{}{}{:02d}".format,
    st.sampled_from(["", ".5", ".123456"]),
    st.sampled_from("+-"),
    st.integers(0, 15),
)
numeric_words = st.sampled_from(["NaN", "Infinity", "-Infinity", "inf", "-inf", "nan", "Inf"])
values_by_kind: dict[ColumnKind, st.SearchStrategy[object]] = {
    "plain": texts | long_texts,
    "number": pg_numerics | numeric_words | texts,
    "timestamptz": pg_timestamps | hour_offsets | texts,
    "timestamp": pg_timestamps.map(lambda t: t[:19] if t[0].isdigit() else t) | texts,
    "json": texts,
}
versions = st.integers(0, 2**63) | st.integers(-(2**65), 2**66) | st.booleans()
# msgspec refuses field names with '"', '\\' or control characters.
column_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters='"\\', exclude_categories=["Cc"]),
    max_size=12,
).filter(lambda name: name != VERSION_FIELD)


@st.composite
def views(draw: st.DrawFn) -> tuple[list[str], list[ColumnKind]]:
    columns = draw(st.lists(column_names, unique=True, max_size=6))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(columns), max_size=len(columns)))
    return columns, kinds


@st.composite
def rows_of(draw: st.DrawFn, kinds: Sequence[ColumnKind]) -> Sequence[object]:
    values = tuple(
        draw(st.none() | values_by_kind[kind] | (others if draw(st.booleans()) else st.nothing()))
        for kind in kinds
    )
    shape = draw(st.sampled_from(["tuple"] * 8 + ["list", "short", "long"]))
    if shape == "list":
        return list(values)
    if shape == "short":
        return values[:-1]
    if shape == "long":
        return (*values, None)
    return values


def outcome(call: Callable[..., object], *args: Any) -> object:
    try:
        return call(*args)
    except Exception as error:  # the Python path's errors must come out of the C path too
        return (type(error), str(error))


@given(st.data())
@settings(max_examples=600, deadline=None)  # no speed asserted: a loaded box is slow
def test_documents_are_the_python_paths_bytes(data: st.DataObject) -> None:
    columns, kinds = data.draw(views())
    encoder = DocumentEncoder(columns, kinds)
    assert speedups is not None and isinstance(encoder.encode, speedups.DocumentWriter)
    for _ in range(3):
        values = data.draw(rows_of(kinds))
        version = data.draw(versions)
        assert outcome(encoder.encode, values, version) == outcome(
            encoder.python_encode, values, version
        )


@given(st.data())
@settings(max_examples=300, deadline=None)  # no speed asserted: a loaded box is slow
def test_snapshot_entries_are_the_python_paths_entries(data: st.DataObject) -> None:
    columns, kinds = data.draw(views())
    encoder = DocumentEncoder(columns, kinds)
    keys = st.text(alphabet=awkward | st.characters(codec="utf-8"), max_size=12)
    rows: dict[str, Any] = {
        key: data.draw(rows_of(kinds))
        for key in data.draw(st.lists(keys, unique=True, max_size=30))
    }
    ts = data.draw(versions)
    partitions = data.draw(st.integers(1, 9))
    cap = data.draw(st.sampled_from([1, 2, 3, 5, 256]))
    for _ in range(2):  # the second call reuses the writer's buffers
        packed = outcome(snapshot_entries, ts, rows, encoder.encode, partitions, cap)
        assert packed == outcome(snapshot_entries, ts, rows, encoder.python_encode, partitions, cap)
    if isinstance(packed, list):  # the C path's crc32 against the one definition
        for entry in packed:
            fields = entry.fields
            held = (
                [fields[b"key"]] if b"key" in fields else [n[2:] for n in fields if n[:2] == b"u:"]
            )
            assert [partition_of(key, partitions) for key in held] == [entry.partition] * len(held)


@given(st.data())
@settings(max_examples=200, deadline=None)  # no speed asserted: a loaded box is slow
def test_byte_caps_and_oversized_documents_pack_the_same(data: st.DataObject) -> None:
    encoder = DocumentEncoder(["t"], ["plain"])
    sizes = st.integers(0, 3000)
    rows: dict[str, Any] = {
        f"k{n}": ("x" * size,) for n, size in enumerate(data.draw(st.lists(sizes, max_size=40)))
    }
    partitions = data.draw(st.integers(1, 4))
    cap = data.draw(st.sampled_from([1, 3, 256]))
    max_bytes = data.draw(st.sampled_from([0, 1, 500, 4000, 20_000]))
    max_doc = data.draw(st.sampled_from([0, 100, 1500]))

    def packed(encode: Any) -> tuple[list[Entry], list[tuple[str, int]]]:
        oversize: list[tuple[str, int]] = []
        entries = snapshot_entries(
            5, rows, encode, partitions, cap,
            max_bytes=max_bytes, max_doc_bytes=max_doc, oversize=oversize,
        )  # fmt: skip
        return entries, oversize

    c_entries, c_oversize = packed(encoder.encode)
    assert (c_entries, c_oversize) == packed(encoder.python_encode)
    assert sorted(key for key, _ in c_oversize) == sorted(
        key for key, values in rows.items() if max_doc and len(values[0]) + 25 > max_doc
    )
    for entry in c_entries:  # closed once it reaches the cap: at most one document over
        if max_bytes and entry.changes > 1:
            assert len(entry.body) - len(max(entry.fields.values(), key=len)) < max_bytes + 200


def test_documents_of_every_length_pack_the_same() -> None:
    # Document lengths of 1 to 4 digits: the C path writes a 3-digit header first.
    encoder = DocumentEncoder(["t"], ["plain"])
    rows: dict[str, Any] = {f"k{n}": ("x" * n,) for n in (0, 60, 99, 500, 985, 1000, 20_000)}
    for partitions in (1, 3):
        assert snapshot_entries(5, rows, encoder.encode, partitions, 3) == snapshot_entries(
            5, rows, encoder.python_encode, partitions, 3
        )


@st.composite
def odd_subscribe_rows(draw: st.DrawFn) -> list[Any]:
    """subscribe_rows, with now and then a row that is a list, too short, or odd."""
    rows: list[Any] = draw(subscribe_rows())
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(rows)))
        before = rows[at - 1] if at else ("10", False, 1, "kx", "a")
        odd = draw(
            st.sampled_from(
                [
                    list(before),
                    before[:3],
                    before[:2],
                    (before[0], True, 1, "ky", "b"),  # progressed, yet a diff and a key
                    (before[0], 0, 1, "kz", "c"),  # falsy, but not False
                    (before[0], False, True, "kw", "a"),  # == 1, but a bool
                    (before[0], False, 1, "", "e"),  # a key the codec cannot carry
                    (before[0], False, 1, "k" * 513, "l"),  # longer than an OpenSearch id
                    (before[0], False, 1, "é" * 257, "u"),  # 514 bytes in UTF-8
                    (before[0], False, 1, "é" * 256, "u"),  # 512 bytes: fine
                ]
            )
        )
        rows.insert(at, odd)
    return rows


@given(
    odd_subscribe_rows(),
    st.lists(st.integers(0, 200), max_size=6),
    st.sampled_from([1, 2, 3, 1000]),
    st.booleans(),
)
@settings(max_examples=400, deadline=None)  # no speed asserted: a loaded box is slow
def test_held_snapshot_rows_are_the_python_loops(
    rows: list[Any], cuts: list[int], hold_limit: int, snapshot: bool
) -> None:
    def feed_all(built: bool) -> list[object]:
        consolidator = Consolidator(snapshot=snapshot, hold_limit=hold_limit)
        outs: list[object] = []
        start = 0
        with pytest.MonkeyPatch.context() as patch:
            if not built:
                patch.setattr(native, "speedups", None)
            for cut in [*sorted({c % (len(rows) + 1) for c in cuts}), len(rows)]:
                rejected: list[Rejected] = []
                out = outcome(consolidator.feed_rows, SUBSCRIBE_LAYOUT, rows[start:cut], rejected)
                start = cut
                snapshot_order = list(getattr(out, "snapshot", {}).items())
                outs.append((out, snapshot_order, rejected, consolidator.frontier))
        return outs

    assert feed_all(True) == feed_all(False)


def test_a_writer_without_init_refuses_to_write() -> None:
    assert speedups is not None
    writer = speedups.DocumentWriter.__new__(speedups.DocumentWriter)
    with pytest.raises(ValueError, match="not initialized"):
        writer(("x",), 1)
    with pytest.raises(ValueError, match="not initialized"):
        speedups.pack_upserts(writer, {"k": ("x",)}, 1, 1, 1)


def test_writer_arguments_are_checked() -> None:
    assert speedups is not None
    encoder = DocumentEncoder(["a"], ["plain"])
    with pytest.raises(ValueError, match="one prefix per kind"):
        speedups.DocumentWriter(b"pp", (b'{"a":',), b',"v":', encoder.python_encode)
    with pytest.raises(ValueError, match="unknown column kind x"):
        speedups.DocumentWriter(b"x", (b'{"a":',), b',"v":', encoder.python_encode)
    with pytest.raises(TypeError, match="takes"):
        encoder.encode(("x",))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least 1"):
        speedups.pack_upserts(encoder.encode, {"k": ("x",)}, 1, 0, 1)  # type: ignore[arg-type]


def test_decimal_and_datetime_values_go_the_python_way() -> None:
    # A connection without the text loaders: the C writer hands the row over.
    encoder = DocumentEncoder(["n", "t"], ["number", "timestamptz"])
    values = (Decimal("1.50"), dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC))
    assert encoder.encode(values, 3) == encoder.python_encode(values, 3)
    assert encoder.encode(values, 3) == (
        b'{"n":1.50,"t":"2024-05-01T10:00:00Z","' + VERSION_FIELD.encode() + b'":3}'
    )


def test_a_fallback_cannot_pack_again_with_its_writer() -> None:
    # pack_upserts keeps its open entries in the writer: a second call from inside the
    # first (through a fallback) is refused, and the writer works on afterwards.
    assert speedups is not None
    writers: list[Any] = []

    def fallback(values: Sequence[object], version: int) -> bytes:
        assert speedups is not None
        speedups.pack_upserts(writers[0], {"k2": ("y",)}, version, 1, 1)
        return b"{}"

    writer = speedups.DocumentWriter(b"p", (b'{"a":',), b',"v":', fallback)
    writers.append(writer)
    odd: dict[str, Any] = {"k": ["x"]}  # a list: the fallback's
    with pytest.raises(RuntimeError, match="already running"):
        speedups.pack_upserts(writer, odd, 7, 1, 1)
    [(partition, count, body)] = speedups.pack_upserts(writer, {"k": ("x",)}, 7, 1, 1) or []
    assert (partition, count) == (0, 1)
    assert body.endswith(b'$3\r\ndoc\r\n$15\r\n{"a":"x","v":7}\r\n')
