"""A view row → the JSON document bytes OpenSearch will receive, encoded once.

Pure, no I/O; the hot path of the producer.

Choice (measured on this machine, 100,000 FreshMart-shaped rows from PostgreSQL
through psycopg 3.3, see bench/producer.py for the end-to-end figure): psycopg's
default loaders build a ``Decimal`` per numeric and a ``datetime`` per timestamptz
only for us to format them again; loading those columns as *text* with psycopg's
C ``TextLoader`` (see :func:`register_text_loaders`) fetched ~1.4× faster, and
turning the text into JSON here — numeric text spliced in as a JSON number with
``msgspec.Raw``, ``2024-05-01 10:00:00.5+00`` rewritten to ISO 8601
``2024-05-01T10:00:00.5+00:00`` with two slices — encoded faster than msgspec
encoding ``Decimal``/``datetime`` objects. Encoding a ``msgspec.Struct`` built for
the view's columns is about twice as fast as encoding a ``dict``.

Every document carries its version (the Materialize timestamp it was written at)
in :data:`common.entries.VERSION_FIELD`, last.

C path. Written by hand, because here a library costs speed (the project's rule):
with all of the above, a snapshot row still cost ~2.2 µs to become its document
(a Struct and ``Raw`` objects built per row only to be encoded, the timestamp
rewritten with ``str.replace``) and ~0.7 µs more to be packed into an entry
(:func:`producer.batches.snapshot_entries`); with holding it in the consolidator,
about half of the producer's CPU per row at the time, which kept it below its goal
of 100k rows/s. ``producer/_speedups.c`` (built by ``pip install -e .``) writes the
document straight from the loaded text and packs the entries in one pass: document +
entry ~0.6 µs per row (20,000 FreshMart rows in FETCH-sized batches, this box), which
took the producer past that goal (what it reaches today: the README's "Measured"
table, ``python -m bench.producer`` and ``python -m bench.headroom``). It writes exactly the
bytes of this module's Python path (tests/unit/producer/test_speedups.py compares
them on arbitrary rows), and hands every value it does not handle itself (not a
str/None/bool/int, a timestamp shorter than 3 characters, lone surrogates) back to
that path for the row. :attr:`DocumentEncoder.encode` is the C writer when
:data:`producer.native.speedups` is built, else the Python function. The C writer
also takes a snapshot row still in libpq's result (a ``RawRow``, producer.results)
and writes the document from the result's text, the same bytes as from the values
psycopg would load from it (tests/unit/producer/test_results.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import msgspec
from psycopg.adapt import AdaptersMap
from psycopg.types.string import TextLoader

from ..common.entries import VERSION_FIELD
from . import native

__all__ = [
    "TEXT_LOADED_TYPES",
    "ColumnKind",
    "DocumentEncoder",
    "iso_timestamp",
    "kind_of_type",
    "register_text_loaders",
]

ColumnKind = Literal["plain", "number", "timestamptz", "timestamp", "json"]

# PostgreSQL type OIDs (Materialize uses the same ones for these types).
_NUMERIC_OID: Final = 1700
_TIMESTAMPTZ_OID: Final = 1184
_TIMESTAMP_OID: Final = 1114
_JSON_OID: Final = 114
_JSONB_OID: Final = 3802

# Loaded as text by register_text_loaders; everything else keeps psycopg's C
# loaders (text → str, int8 → int, bool → bool, float8 → float, date → date).
TEXT_LOADED_TYPES: Final = ("numeric", "timestamptz", "timestamp", "json", "jsonb")

_KINDS: Final[dict[int, ColumnKind]] = {
    _NUMERIC_OID: "number",
    _TIMESTAMPTZ_OID: "timestamptz",
    _TIMESTAMP_OID: "timestamp",
    _JSON_OID: "json",
    _JSONB_OID: "json",
}
# The column kinds as the C writer (producer/_speedups.c) takes them, a byte each.
_KIND_CODES: Final[dict[ColumnKind, bytes]] = {
    "plain": b"p",
    "number": b"n",
    "timestamptz": b"t",
    "timestamp": b"t",
    "json": b"j",
}
# numeric text that is not a JSON number; OpenSearch gets null for these.
_NOT_JSON_NUMBERS: Final = frozenset({"NaN", "Infinity", "-Infinity", "inf", "-inf"})


def register_text_loaders(adapters: AdaptersMap) -> None:
    """Make ``adapters`` (a connection's or cursor's) load :data:`TEXT_LOADED_TYPES` as str."""
    for name in TEXT_LOADED_TYPES:
        adapters.register_loader(name, TextLoader)


def kind_of_type(type_oid: int) -> ColumnKind:
    """How a column of type ``type_oid`` (cursor.description type_code) is encoded."""
    return _KINDS.get(type_oid, "plain")


def iso_timestamp(text: str) -> str | None:
    """PostgreSQL/Materialize timestamp(tz) text → ISO 8601; None for ±infinity.

    ``2024-05-01 10:00:00.5+00`` → ``2024-05-01T10:00:00.5+00:00``; offsets with
    minutes or seconds are kept; a timestamp without zone stays without one.
    """
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    elif text in ("infinity", "-infinity"):
        return None
    else:
        text = text.replace(" ", "T", 1)  # years beyond 9999, or BC dates
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
        return text + ":00"
    return text


# The converters expect the text loaders; the isinstance checks keep a connection
# without them (default Decimal/datetime/dict loaders) encoding correctly.
def _number(text: Any) -> object:
    if not isinstance(text, str):
        text = str(text)
    if text in _NOT_JSON_NUMBERS:
        return None
    return msgspec.Raw(text)


def _timestamp(text: Any) -> object:
    if isinstance(text, str):
        return iso_timestamp(text)
    return text  # a datetime: msgspec writes ISO 8601 itself


def _json(text: Any) -> object:
    if isinstance(text, str):
        return msgspec.Raw(text)
    return text


def _other(value: Any) -> object:
    # Types the view does not use today (uuid, interval, arrays…): their text form.
    return str(value)


class DocumentEncoder:
    """Encodes rows of one subscription's columns to document bytes.

    ``columns`` and ``kinds`` come from the cursor description (view columns only,
    bookkeeping columns dropped). Raises ValueError if a column is named like
    the version field.

    The per-row work is one generated function (``_compile_row``): unpacking the
    row and converting each column inline costs ~40 % of calling a converter per
    value. It expects the text loaders; any other value (a Decimal, a datetime, an
    odd text) makes it fall back to the per-value converters, which handle all.

    The generated function encodes into a scratch ``bytearray`` kept by the encoder
    (``Encoder.encode_into``) and copies the result out once: ``Encoder.encode``
    starts every document in a small buffer and regrows it several times on the way
    to ~650 bytes; measured on 20,000 FreshMart rows, 0.95 → 0.71 µs per document.
    (Splicing the JSON by hand from the loaded text in Python was measured too, and
    lost: ``str %`` formatting of 19 values alone took 1.65 µs, and checking the
    values for characters that need escaping another 0.5–2 µs; msgspec does both in
    C. The C path, see the module docstring, splices it in C.)
    """

    __slots__ = ("_converters", "_encode", "_struct", "columns", "encode", "python_encode")

    def __init__(self, columns: Sequence[str], kinds: Sequence[ColumnKind]) -> None:
        if len(columns) != len(kinds):
            raise ValueError("one kind per column")
        if VERSION_FIELD in columns:
            raise ValueError(f"the view has a column named {VERSION_FIELD}, the version field")
        self.columns = tuple(columns)
        # Field names f0…fN renamed to the column names: any column name works,
        # keywords and non-identifiers included, and the order is the row's.
        fields: list[tuple[str, type]] = [(f"f{i}", object) for i in range(len(columns))]
        fields.append(("version", int))
        rename = {f"f{i}": name for i, name in enumerate(columns)}
        rename["version"] = VERSION_FIELD
        # gc=False: a document holds only loaded values, never a reference cycle, and
        # tracking one per row made the cyclic GC scan every document.
        self._struct: Any = msgspec.defstruct("Document", fields, rename=rename, gc=False)
        self._converters: tuple[tuple[int, Any], ...] = tuple(
            (index, _CONVERTERS[kind]) for index, kind in enumerate(kinds) if kind != "plain"
        )
        encoder = msgspec.json.Encoder(enc_hook=_other)
        self._encode = encoder.encode
        #: The Python path of :attr:`encode` (a generated function, not a method: one
        #: call per row instead of three); the C writer hands it the rows it does not
        #: handle.
        self.python_encode: Callable[[Sequence[object], int], bytes] = _compile_row(
            kinds, self._struct, encoder.encode_into, bytearray(4096), self._robust
        )
        #: ``encode(values, version) -> bytes``: the JSON document of one row (values in
        #: column order) at ``version``; the C writer if it was built (module docstring).
        self.encode: Callable[[Sequence[object], int], bytes] = self.python_encode
        speedups = native.speedups
        if speedups is not None:
            try:
                prefixes = _field_prefixes(self.columns)
            except UnicodeEncodeError:  # lone surrogates (not from psycopg): Python's errors
                return
            self.encode = speedups.DocumentWriter(
                b"".join(_KIND_CODES[kind] for kind in kinds),
                prefixes,
                (b"," if self.columns else b"{") + msgspec.json.encode(VERSION_FIELD) + b":",
                self.python_encode,
            )

    def _robust(self, values: Sequence[object], version: int) -> bytes:
        row = list(values)
        for index, convert in self._converters:
            value = row[index]
            if value is not None:
                row[index] = convert(value)
        return self._encode(self._struct(*row, version))

    def encode_array(self, rows: Sequence[Sequence[object]], version: int) -> bytes:
        """A JSON array of the documents of ``rows`` (for dead letters)."""
        return b"[" + b",".join(self.encode(row, version) for row in rows) + b"]"


def _field_prefixes(columns: Sequence[str]) -> tuple[bytes, ...]:
    """What msgspec writes before each field's value: ``{"a":``, then ``,"b":``…

    (msgspec refuses field names that would need escaping, so they are quoted as is.)
    """
    return tuple(
        (b"," if index else b"{") + msgspec.json.encode(name) + b":"
        for index, name in enumerate(columns)
    )


def _compile_row(
    kinds: Sequence[ColumnKind],
    struct: Any,
    encode_into: Callable[[object, bytearray], None],
    scratch: bytearray,
    robust: Callable[[Sequence[object], int], bytes],
) -> Any:
    """``def row(values, version): c0, c1, … = values; encode_into(Document(<c0>, …),
    scratch); return bytes(scratch)``.

    Generated from the column kinds only (no names or data reach the source), like
    ``collections.namedtuple`` does. Timestamp text is rewritten inline
    (``c.replace(' ', 'T', 1)`` plus ``:00`` after a bare ``+HH`` offset);
    ``infinity``/``-infinity`` (first character ``i`` or ``-``) become null.
    """
    names = [f"c{i}" for i in range(len(kinds))]
    parts: list[str] = []
    for name, kind in zip(names, kinds, strict=True):
        if kind in ("timestamptz", "timestamp"):
            moved = f"{name}.replace(' ', 'T', 1)"
            parts.append(
                f"(None if {name} is None or {name}[0] in 'i-' else "
                f"({moved} + ':00' if {name}[-3] in '+-' else {moved}))"
            )
        elif kind == "number":
            parts.append(f"(None if {name} is None or {name} in NOT_NUMBERS else Raw({name}))")
        elif kind == "json":
            parts.append(f"(None if {name} is None else Raw({name}))")
        else:
            parts.append(name)
    unpack = f"        {', '.join(names)}, = values\n" if names else ""
    source = (
        "def row(values, version):\n"
        "    try:\n"
        f"{unpack}"
        f"        encode_into(Document({', '.join([*parts, 'version'])}), scratch)\n"
        "        return bytes(scratch)\n"
        "    except (AttributeError, TypeError, IndexError, ValueError):\n"
        "        return robust(values, version)\n"
    )
    namespace: dict[str, Any] = {
        "Document": struct,
        "Raw": msgspec.Raw,
        "NOT_NUMBERS": _NOT_JSON_NUMBERS,
        "encode_into": encode_into,
        "scratch": scratch,
        "robust": robust,
    }
    exec(compile(source, "<producer.documents row>", "exec"), namespace)
    return namespace["row"]


_CONVERTERS: Final[dict[ColumnKind, Any]] = {
    "number": _number,
    "timestamptz": _timestamp,
    "timestamp": _timestamp,
    "json": _json,
}
