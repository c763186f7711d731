"""glibc's heap, for the emulator's memory (engine.py gives freed heap back after a
large read; memory.py reports it). Kept apart from memory.py so the engine does not
import the report that imports the engine."""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["libc", "release_free_heap"]


def libc() -> ctypes.CDLL | None:
    """The C library, or None where there is none to find."""
    path = ctypes.util.find_library("c")
    return ctypes.CDLL(path) if path is not None else None


def release_free_heap() -> None:
    """Return the free pages of glibc's heap to the system (``malloc_trim(0)``): what a
    large transient freed stays resident otherwise while anything lies above it. A no-op
    without glibc; milliseconds for hundreds of MB."""
    found = libc()
    if found is not None and hasattr(found, "malloc_trim"):
        found.malloc_trim(0)
