"""producer/results.py and the raw results of producer/_speedups.c: rows read from
libpq's result give exactly what the tuples psycopg loads from it give.

The results here are built with libpq itself (PQmakeEmptyPGresult, PQsetvalue on the
libpq psycopg loaded, through ctypes), no server: each property runs the raw path
and the tuple path on the same rows, the tuples loaded from the same texts the way
psycopg's loaders do for those types (text -> str, int8 -> int, bool -> bool, and the
producer's text loaders for numeric, timestamps, json).
tests/integration/test_producer_results.py compares against psycopg's own loading.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchsync.producer import native
from searchsync.producer.batches import snapshot_entries
from searchsync.producer.consolidate import Consolidator
from searchsync.producer.documents import ColumnKind, DocumentEncoder
from searchsync.producer.results import ResultRows, raw_kind_of_type
from searchsync.producer.rows import FIRST_VALUE, Layout, Rejected
from tests.unit.producer.test_consolidate import subscribe_rows
from tests.unit.producer.test_documents import pg_numerics, pg_timestamps
from tests.unit.producer.test_speedups import awkward, hour_offsets, numeric_words, outcome

speedups = native.speedups
pytestmark = pytest.mark.skipif(
    speedups is None or not native.raw_results(), reason="the C path is not built"
)

PGRES_TUPLES_OK = 2
TEXT, INT8, BOOL, NUMERIC, TIMESTAMPTZ, JSONB = 25, 20, 16, 1700, 1184, 3802


class _AttDesc(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("tableid", ctypes.c_uint),
        ("columnid", ctypes.c_int),
        ("format", ctypes.c_int),
        ("typid", ctypes.c_uint),
        ("typlen", ctypes.c_int),
        ("atttypmod", ctypes.c_int),
    ]


def _libpq() -> ctypes.CDLL:
    path = native.loaded_libpq()
    assert path is not None
    lib = ctypes.CDLL(path)
    lib.PQmakeEmptyPGresult.restype = ctypes.c_void_p
    lib.PQmakeEmptyPGresult.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.PQsetResultAttrs.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_AttDesc)]
    lib.PQsetvalue.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
    ]  # fmt: skip
    lib.PQclear.argtypes = [ctypes.c_void_p]
    return lib


class Result:
    """A PGresult of ``rows`` (texts, None for NULL) with columns of ``types``; freed
    with the object (it is the RawResult's owner)."""

    def __init__(self, types: Sequence[int], rows: Sequence[Sequence[bytes | None]]) -> None:
        self._lib = lib = _libpq()
        self.address: int = lib.PQmakeEmptyPGresult(None, PGRES_TUPLES_OK)
        descs = (_AttDesc * len(types))(
            *(_AttDesc(f"c{i}".encode(), 0, 0, 0, oid, -1, -1) for i, oid in enumerate(types))
        )
        assert lib.PQsetResultAttrs(self.address, len(types), descs) == 1
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                ok = lib.PQsetvalue(self.address, r, c, text, -1 if text is None else len(text))
                assert ok == 1

    def __del__(self) -> None:
        self._lib.PQclear(self.address)


def load(oid: int, text: bytes | None) -> object:
    """What psycopg gives for ``text`` of a column of type ``oid`` (with the producer's
    text loaders)."""
    if text is None:
        return None
    if oid == INT8:
        return int(text)
    if oid == BOOL:
        return text == b"t"
    return text.decode()


def loader(types: Sequence[int], rows: Sequence[Sequence[bytes | None]]) -> Any:
    def load_row(row: int) -> tuple[object, ...]:
        return tuple(load(oid, text) for oid, text in zip(types, rows[row], strict=True))

    return load_row


class FakeTransformer:
    """psycopg's Transformer as ResultRows uses it (load_row, load_rows)."""

    def __init__(self, load_row: Callable[[int], tuple[object, ...]]) -> None:
        self._load_row = load_row

    def load_row(self, row: int, make_row: object) -> tuple[object, ...]:
        return self._load_row(row)

    def load_rows(self, row0: int, row1: int, make_row: object) -> list[tuple[object, ...]]:
        return [self._load_row(row) for row in range(row0, row1)]


def result_rows(types: Sequence[int], rows: Sequence[Sequence[bytes | None]]) -> ResultRows:
    """A ResultRows over a built result (what Subscription.fetch makes of a cursor)."""
    assert speedups is not None
    result = Result(types, rows)
    load_row = loader(types, rows)
    kinds = b"".join(raw_kind_of_type(oid) or b"?" for oid in types[FIRST_VALUE:])
    built = ResultRows.__new__(ResultRows)
    built._transformer = FakeTransformer(load_row)  # type: ignore[assignment]
    built._count = len(rows)
    built.raw = speedups.RawResult(
        result, result.address, FIRST_VALUE, kinds, lambda row: load_row(row)[FIRST_VALUE:]
    )
    return built


# Texts of each column kind as Materialize sends them.
utf8 = st.text(alphabet=awkward | st.characters(codec="utf-8", exclude_characters="\x00"))
texts_by_oid: dict[int, st.SearchStrategy[str]] = {
    TEXT: utf8,
    INT8: st.integers(-(2**63), 2**63 - 1).map(str),
    BOOL: st.sampled_from(["t", "f"]),
    NUMERIC: pg_numerics | numeric_words,
    TIMESTAMPTZ: pg_timestamps | hour_offsets | st.sampled_from(["1", "-1", "a b"]),
    JSONB: st.sampled_from(['{"a": 1}', "[]", "null", '"x"', "1.5"]),
}
KIND_OF: dict[int, ColumnKind] = {
    TEXT: "plain", INT8: "plain", BOOL: "plain", NUMERIC: "number",
    TIMESTAMPTZ: "timestamptz", JSONB: "json",
}  # fmt: skip


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[list[int], list[list[bytes | None]]]:
    """A snapshot result: ts, progressed, diff, a text key, then columns of any kind;
    distinct keys, each row a first +1 at one timestamp."""
    value_types = draw(st.lists(st.sampled_from(sorted(texts_by_oid)), max_size=6))
    types = [NUMERIC, BOOL, INT8, TEXT, *value_types]
    keys = draw(st.lists(utf8.filter(lambda k: 0 < len(k.encode()) <= 512), unique=True))
    rows: list[list[bytes | None]] = []
    for key in keys:
        values = [
            None if draw(st.integers(0, 5)) == 0 else draw(texts_by_oid[oid]).encode()
            for oid in value_types
        ]
        rows.append([b"7", b"f", b"1", key.encode(), *values])
    return types, rows


def held(rows: ResultRows, room: int = 1 << 30) -> tuple[int, dict[str, Any]]:
    assert speedups is not None
    snap: dict[str, Any] = {}
    stop = speedups.hold_snapshot_result(
        rows.raw, 0, b"7", FIRST_VALUE, snap, speedups.KeySet(), room
    )
    return stop, snap


@given(snapshots(), st.integers(0, 2**63) | st.integers(-(2**65), 2**66))
@settings(max_examples=300, deadline=None)  # no speed asserted: a loaded box is slow
def test_documents_and_entries_of_raw_rows_are_the_tuples(
    snapshot: tuple[list[int], list[list[bytes | None]]], version: int
) -> None:
    types, texts = snapshot
    rows = result_rows(types, texts)
    stop, snap = held(rows)
    assert stop == len(texts) and len(snap) == len(texts)
    columns = [f"c{i}" for i in range(len(types) - FIRST_VALUE)]
    encoder = DocumentEncoder(columns, [KIND_OF[oid] for oid in types[FIRST_VALUE:]])
    tuples = {key: tuple(row) for key, row in snap.items()}
    assert tuples == {row[3]: row[FIRST_VALUE:] for row in rows}
    for key, row in snap.items():
        assert outcome(encoder.encode, row, version) == outcome(
            encoder.python_encode, tuples[key], version
        )
    for partitions, cap in ((1, 256), (3, 2)):
        assert outcome(snapshot_entries, version, snap, encoder.encode, partitions, cap) == outcome(
            snapshot_entries, version, tuples, encoder.python_encode, partitions, cap
        )


def text_of(column: int, value: object) -> bytes | None:
    """The text Materialize would send for a loaded value of subscribe_rows (an mz_diff
    given as a bool: its int)."""
    if value is None:
        return None
    if column == 2 and isinstance(value, bool):
        return str(int(value)).encode()
    if value is True or value is False:
        return b"t" if value else b"f"
    return str(value).encode()


@given(
    subscribe_rows(),
    st.lists(st.integers(0, 200), max_size=6),
    st.sampled_from([1, 2, 3, 1000]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)  # no speed asserted: a loaded box is slow
def test_feed_rows_of_a_result_is_feed_rows_of_its_tuples(
    loaded: list[tuple[object, ...]], cuts: list[int], hold_limit: int, snapshot: bool
) -> None:
    types = [NUMERIC, BOOL, INT8, TEXT, TEXT]
    texts = [[text_of(column, value) for column, value in enumerate(row)] for row in loaded]
    layout = Layout.from_columns(["mz_timestamp", "mz_progressed", "mz_diff", "id", "v"],
                                 "diffs", "id")  # fmt: skip
    raw = Consolidator(snapshot=snapshot, hold_limit=hold_limit)
    tuples = Consolidator(snapshot=snapshot, hold_limit=hold_limit)
    start = 0
    for cut in [*sorted({c % (len(texts) + 1) for c in cuts}), len(texts)]:
        rows = result_rows(types, texts[start:cut])
        as_loaded = list(rows)
        start = cut
        rejected: tuple[list[Rejected], list[Rejected]] = ([], [])
        got: Any = outcome(raw.feed_rows, layout, rows, rejected[0])
        want: Any = outcome(tuples.feed_rows, layout, as_loaded, rejected[1])
        assert got == want
        if hasattr(got, "snapshot"):  # in the same order, values as tuples
            assert [(k, tuple(v)) for k, v in got.snapshot.items()] == list(want.snapshot.items())
        assert rejected[0] == rejected[1]
        assert raw.frontier == tuples.frontier
        assert raw.live_keys == tuples.live_keys


def test_hold_stops_where_the_tuple_loop_stops() -> None:
    assert speedups is not None
    types = [NUMERIC, BOOL, INT8, TEXT, TEXT]
    texts: list[list[bytes | None]] = [
        [b"7", b"f", b"1", b"a", b"x"],
        [b"7", b"f", b"1", b"b", None],
        [b"7", b"f", b"1", b"a", b"y"],  # a repeated key
        [b"7", b"f", b"1", b"c", b"z"],
    ]
    rows = result_rows(types, texts)
    assert held(rows) == (2, {"a": ("a", "x"), "b": ("b", None)})
    for stopper in (
        [b"8", b"f", b"1", b"d", b"x"],  # a later timestamp
        [b"7", b"t", None, None, None],  # progress
        [b"7", b"f", b"-1", b"d", b"x"],  # a retraction
        [b"7", b"f", b"2", b"d", b"x"],  # two copies
        [b"7", b"f", b"1", None, b"x"],  # a NULL key
        [b"7", b"f", b"1", b"", b"x"],  # an empty key
        [b"7", b"f", b"1", b"k" * 513, b"x"],  # longer than an OpenSearch id
        [b"7", b"f", b"1", b"\xff", b"x"],  # not UTF-8
        [b"07", b"f", b"1", b"d", b"x"],  # equal as a number, not as text
    ):
        stop, snap = held(result_rows(types, [texts[0], stopper, texts[3]]))
        assert (stop, list(snap)) == (1, ["a"]), stopper
    stop, snap = held(rows, room=1)
    assert (stop, list(snap)) == (1, ["a"])  # room reached: handed back after that row


def test_a_raw_row_reads_like_its_tuple() -> None:
    types = [NUMERIC, BOOL, INT8, TEXT, INT8, BOOL]
    rows = result_rows(types, [[b"7", b"f", b"1", b"a", b"42", b"t"]])
    _, snap = held(rows)
    row = snap["a"]
    assert type(row).__name__ == "RawRow"
    assert len(row) == 3 and tuple(row) == ("a", 42, True) and list(row) == ["a", 42, True]
    assert row == ("a", 42, True) and row != ("a", 42, False) and hash(row) == hash(("a", 42, True))
    assert row[2] is True and repr(row) == "RawRow(('a', 42, True))"
    with pytest.raises(IndexError):
        row[3]
    assert rows[0] == ("7", False, 1, "a", 42, True) and rows[-1] == rows[0]
    assert rows[0:5] == [rows[0]] and rows[::2] == [rows[0]] and len(rows) == 1
    with pytest.raises(IndexError):
        rows[1]


def test_raw_results_refuse_what_they_cannot_read() -> None:
    assert speedups is not None
    result = Result([TEXT], [])
    with pytest.raises(ValueError, match="unknown kind"):
        speedups.RawResult(result, result.address, 0, b"x", lambda row: ())
    with pytest.raises(ValueError, match="the result has 1"):
        speedups.RawResult(result, result.address, 0, b"ss", lambda row: ())
    with pytest.raises(ValueError, match="NULL"):
        speedups.RawResult(result, 0, 0, b"s", lambda row: ())
    with pytest.raises(TypeError):
        speedups.RawRow()
    with pytest.raises(ValueError, match="NULL address"):
        speedups.set_libpq(0, 1, 2, 3, 4)
    raw = speedups.RawResult(result, result.address, 0, b"s", lambda row: ())
    with pytest.raises(ValueError, match="out of range"):
        speedups.hold_snapshot_result(raw, 0, b"7", 9, {}, set(), 10)


def test_a_load_that_gives_no_tuple_is_an_error() -> None:
    assert speedups is not None
    result = Result([NUMERIC, BOOL, INT8, TEXT], [[b"7", b"f", b"1", b"a"]])
    not_a_tuple: Any = lambda row: ["a"]  # noqa: E731
    raw = speedups.RawResult(result, result.address, FIRST_VALUE, b"s", not_a_tuple)
    snap: dict[str, Any] = {}
    assert speedups.hold_snapshot_result(raw, 0, b"7", 3, snap, speedups.KeySet(), 10) == 1
    with pytest.raises(TypeError, match="not a tuple"):
        tuple(snap["a"])


def test_the_libpq_of_the_process_is_found_once() -> None:
    maps = (
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libpq.so.5.16\n"
        "7f01-7f02 r--p 00001000 08:01 1 /usr/lib/libpq.so.5.16\n"
        "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/libc.so.6\n"
    )
    assert native.loaded_libpq(maps) == "/usr/lib/libpq.so.5.16"
    assert native.loaded_libpq(maps + "7f04-7f05 r-xp 0 08:01 3 /opt/libpq-abc.so.5\n") is None
    assert native.loaded_libpq("7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/libc.so.6\n") is None
