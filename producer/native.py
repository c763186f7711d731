"""The producer's hot path in C (``producer/_speedups.c``), or None if it was not built.

``pip install -e .`` builds it (setuptools ``ext-modules`` in pyproject.toml). It is
optional there: without a C compiler the install still succeeds and the producer
runs the pure-Python path, which writes the same bytes with more CPU per row
(``python -m bench.producer`` measures it; the README's "Measured" table has the
figures), and logs a WARNING at start. Callers look up
:data:`speedups` when they run, so a test can compare both paths in one process.

:func:`raw_results` says whether the C path may also read FETCH results straight
from libpq (producer.results): it hands ``_speedups`` the addresses of the five libpq
functions it calls, from the one libpq loaded in this process (psycopg's). libpq is
not linked at build time because psycopg-binary bundles its own, under a hashed
file name, and a second libpq would own different ``PGresult`` structures.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

__all__ = ["loaded_libpq", "raw_results", "speedups"]

log = logging.getLogger("searchsync.producer.native")

try:
    from . import _speedups as speedups
except ImportError:  # not built: the pure-Python path
    speedups = None  # type: ignore[assignment]  # callers check for None

_LIBPQ_FUNCTIONS = ("PQgetvalue", "PQgetlength", "PQgetisnull", "PQntuples", "PQnfields")


def loaded_libpq(maps: str | None = None) -> str | None:
    """The file of the one libpq mapped into this process (``/proc/self/maps``, or
    ``maps``'s text), None when there is none or more than one, or no such file."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:  # not Linux
            return None
    files = {
        line.split(maxsplit=5)[5]
        for line in maps.splitlines()
        if line.count(" ") >= 5 and "/libpq" in line and ".so" in line
    }
    paths = {name.strip() for name in files}
    return paths.pop() if len(paths) == 1 else None


@functools.cache
def raw_results() -> bool:
    """Whether FETCH results may be read in C (libpq found and given to ``_speedups``).

    Call it after psycopg connected (psycopg loads libpq lazily); the answer is
    cached, and False for good when the C path is not built. Logs once (INFO) which.
    """
    if speedups is None or not hasattr(speedups, "set_libpq"):  # not built, or built
        return False  # from an older producer/_speedups.c (reinstall: pip install -e .)
    import psycopg  # noqa: F401  # loads libpq (psycopg.pq) before the lookup

    path = loaded_libpq()
    if path is None:
        log.info("libpq not found once in this process: FETCH results are loaded by psycopg")
        return False
    try:
        library = ctypes.CDLL(path)  # the loaded one: the same handle, not a second copy
        addresses = [ctypes.cast(getattr(library, name), ctypes.c_void_p).value or 0
                     for name in _LIBPQ_FUNCTIONS]  # fmt: skip
    except (OSError, AttributeError) as error:
        log.info("libpq at %s unusable (%s): FETCH results are loaded by psycopg", path, error)
        return False
    speedups.set_libpq(*addresses)
    log.info("libpq at %s: a snapshot's FETCH results are read in C (producer.results)", path)
    return True
