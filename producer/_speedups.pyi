# Types of producer/_speedups.c (see that file and producer/native.py).
from collections.abc import Callable, Iterable, Sequence
from typing import overload

class DocumentWriter:
    def __init__(
        self,
        kinds: bytes,
        prefixes: tuple[bytes, ...],
        version_key: bytes,
        fallback: Callable[[Sequence[object], int], bytes],
    ) -> None: ...
    def __call__(self, values: Sequence[object], version: int, /) -> bytes: ...

def pack_upserts(
    writer: DocumentWriter,
    rows: dict[str, Sequence[object]],
    version: int,
    partitions: int,
    cap: int,
    max_entry_bytes: int = 0,
    max_doc_bytes: int = 0,
    oversize: list[tuple[str, int]] | None = None,
    /,
) -> list[tuple[int, int, bytes]] | None: ...
def hold_snapshot_rows(
    rows: list[tuple[object, ...]],
    start: int,
    raw: object,
    key_index: int,
    first_value: int,
    snap: dict[str, Sequence[object]],
    seen: set[str] | KeySet,
    room: int,
    /,
) -> int: ...

# Rows read straight from libpq's result (producer/results.py)
def set_libpq(
    getvalue: int, getlength: int, getisnull: int, ntuples: int, nfields: int, /
) -> None: ...

class RawResult:
    def __init__(
        self,
        owner: object,
        address: int,
        first: int,
        kinds: bytes,
        load: Callable[[int], tuple[object, ...]],
        /,
    ) -> None: ...
    def __len__(self) -> int: ...

class RawRow(Sequence[object]):
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> object: ...
    @overload
    def __getitem__(self, index: slice, /) -> Sequence[object]: ...

def hold_snapshot_result(
    result: RawResult,
    start: int,
    raw: bytes,
    key_index: int,
    snap: dict[str, Sequence[object]],
    seen: set[str] | KeySet,
    room: int,
    /,
) -> int: ...

# str keys held as their 64-bit hashes: producer/keyset.py
class KeySet:
    def __init__(self) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def add(self, key: str, /) -> bool: ...
    def discard(self, key: str, /) -> bool: ...
    def clear(self) -> None: ...
    def update(self, keys: Iterable[str], /) -> None: ...
    def __contains__(self, key: str, /) -> bool: ...
    def __len__(self) -> int: ...
