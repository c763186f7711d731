"""A set of str keys that keeps only each key's 64-bit hash: bounded memory for millions.

The producer keeps, for every key of a view, whether it has a live row now, across
timestamps and for as long as it runs. A ``set[str]`` of keys shaped like
``order:FM-1234567`` costs 98.6 bytes a key allocated (its str objects and its
table), 114 of RSS, at 1,000,000 keys (``python -m bench.keyset``), and a view may
have millions. So the set holds a fingerprint of each key instead, its ``hash(key)``:

* :class:`producer._speedups.KeySet` (C, ``producer/_speedups.c``): one int64 slot
  a key in a table kept at most 3/4 full: 16.8 bytes a key (19.0 of RSS) at
  1,000,000 keys, 10.7–21.3 from one doubling to the next, 1.5x for the moment
  of a doubling (old and new table);
* :class:`PyKeySet`, the same in pure Python (a ``set[int]``) for when the C
  module is not built: 69.1 bytes a key (81.5 of RSS) at 1,000,000 keys.

:func:`new_key_set` gives the C one when it is built. Both hold the same
fingerprints in one process (``hash`` is ``PyObject_Hash``), so they answer alike.
Per call at 1M keys: C ~80 ns an ``add``, ~85 an ``in``, a set[str] ~110 and ~100,
PyKeySet ~300 each (the bench; ~20-30 ns of each is the call).

The price: two different keys with the same 64-bit hash are one key to the set
(adding the second says it was there, discarding either discards "both", ``in``
is true for a key never added). With CPython's per-process randomized SipHash the
chance that any two of n keys collide is about n²/2⁶⁵: ~2.7e-8 at 1M keys,
~2.7e-6 at 10M. Keys must be exact ``str``: anything else raises TypeError (a str
subclass may hash otherwise), in ``add``, ``discard``, ``in`` and ``update`` alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Protocol

from . import native

__all__ = ["KeySetLike", "PyKeySet", "new_key_set"]

# sys.getsizeof of an int of 61-64 bits, what 7 in 8 hashes are (the rest take 4 or
# 8 bytes less): nbytes estimates instead of summing a million ints on each read.
_INT_BYTES = sys.getsizeof(2**62)


class KeySetLike(Protocol):
    """What :func:`new_key_set` gives: the C ``KeySet`` or :class:`PyKeySet`.

    Every method taking a key raises TypeError for a key that is not an exact str.
    """

    @property
    def nbytes(self) -> int:
        """Bytes held for the keys (C: the table; Python: an estimate)."""
        ...

    def add(self, key: str, /) -> bool:
        """Adds key; True if it was not in the set."""
        ...

    def discard(self, key: str, /) -> bool:
        """Removes key; True if it was in the set."""
        ...

    def clear(self) -> None:
        """Removes every key (and gives back the memory)."""
        ...

    def update(self, keys: Iterable[str], /) -> None:
        """Adds every key of keys; at a non-str one TypeError, those before it added."""
        ...

    def __contains__(self, key: str, /) -> bool: ...

    def __len__(self) -> int: ...


def _fingerprint(key: str) -> int:
    if type(key) is not str:
        raise TypeError(f"KeySet keys must be str, not {type(key).__name__}")
    # never -1 (CPython's hash error value), which the C table keeps for empty slots,
    # so no fingerprint needs remapping here either
    return hash(key)


class PyKeySet:
    """The pure-Python KeySet: a set of ``hash(key)`` ints (see the module docstring).

    Raises TypeError for a key that is not an exact str, as the C type does.
    """

    __slots__ = ("_hashes",)

    def __init__(self) -> None:
        self._hashes: set[int] = set()

    @property
    def nbytes(self) -> int:
        """The set's table plus its ints (each counted as a 64-bit one), in bytes."""
        return sys.getsizeof(self._hashes) + len(self._hashes) * _INT_BYTES

    def add(self, key: str, /) -> bool:
        hashes = self._hashes
        fingerprint = _fingerprint(key)
        if fingerprint in hashes:
            return False
        hashes.add(fingerprint)
        return True

    def discard(self, key: str, /) -> bool:
        hashes = self._hashes
        fingerprint = _fingerprint(key)
        if fingerprint not in hashes:
            return False
        hashes.remove(fingerprint)
        return True

    def clear(self) -> None:
        self._hashes.clear()  # frees the table, as the C type's clear() does

    def update(self, keys: Iterable[str], /) -> None:
        # set.update adds one by one: at a bad key, those before it stay added
        self._hashes.update(map(_fingerprint, keys))

    def __contains__(self, key: str, /) -> bool:
        return _fingerprint(key) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)


def new_key_set() -> KeySetLike:
    """An empty set: the C ``KeySet`` if ``producer._speedups`` is built, else a PyKeySet."""
    speedups = native.speedups  # looked up per call: a test may patch it to None
    if speedups is None:
        return PyKeySet()
    return speedups.KeySet()
