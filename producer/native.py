"""The producer's hot path in C (``producer/_speedups.c``), or None if it was not built.

``pip install -e .`` builds it (setuptools ``ext-modules`` in pyproject.toml). It is
optional there: without a C compiler the install still succeeds and the producer
runs the pure-Python path, which writes the same bytes with more CPU per row
(``python -m bench.producer`` measures it; the README's "Measured" table has the
figures), and logs a WARNING at start. Callers look up
:data:`speedups` when they run, so a test can compare both paths in one process.
"""

from __future__ import annotations

__all__ = ["speedups"]

try:
    from . import _speedups as speedups
except ImportError:  # not built: the pure-Python path
    speedups = None  # type: ignore[assignment]  # callers check for None
