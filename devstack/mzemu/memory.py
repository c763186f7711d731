"""Where the emulator's memory goes: an opt-in report, ``MZEMU_TRACEMALLOC=<path>``.

Off by default. With the variable set, tracemalloc traces every allocation from the
start (``MZEMU_TRACEMALLOC_FRAMES`` frames a traceback, 6 by default; 0: no tracing,
the report without its allocation sites): the emulator runs slower and tracemalloc's own
tables take memory (stated in the report). On SIGUSR2 and at a clean exit the emulator
writes one JSON object to ``<path>`` (replacing it):

- ``rss_mb`` and ``rss_peak_mb`` (VmHWM) of the process;
- ``structures``: the kept view's structures sized by walking them — the per-key
  index, the rows of the view (Row objects and column tuples, column values, the
  cached wire encodings), the rows only the retained history still holds, the history
  itself, the queues of the subscriptions, the sessions' unsent output — with a count
  and bytes each (``sys.getsizeof``; a value shared by several rows, as made-up rows
  share all columns but one with the row they replace, is split between them);
- ``allocator``: what the C allocators hold beside live objects (pymalloc's arenas,
  glibc's free heap), which is where memory freed after a peak stays;
- ``tracemalloc``: traced memory now and at its peak, its own overhead, and the top
  allocation sites, by line and by traceback.

Only reads: nothing here changes what the emulator does. Writing the report walks
every row (seconds for a million) while the event loop waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import linecache
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.mzemu.collection import Collection, Row
from devstack.mzemu.heap import libc as _libc
from devstack.mzemu.heap import release_free_heap

if TYPE_CHECKING:
    from devstack.mzemu.engine import Engine
    from devstack.mzemu.session import Session

__all__ = ["Tally", "release_free_heap", "report", "start_tracing", "tally_view"]

_TOP = 25
_MB = 2**20


@dataclass
class Tally:
    """Objects and bytes per named structure, in the order first seen."""

    count: dict[str, int] = field(default_factory=dict)
    size: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, size: float, count: int = 1) -> None:
        self.count[name] = self.count.get(name, 0) + count
        self.size[name] = self.size.get(name, 0.0) + size

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "count": self.count[name],
                "mb": round(size / _MB, 1),
                "bytes_each": round(size / self.count[name], 1) if self.count[name] else 0,
            }
            for name, size in self.size.items()
        ]


def _shared_size(obj: object) -> float:
    """``obj``'s size divided among the references to it (singletons count ~0).

    getrefcount sees the argument and the caller's loop variable besides the real
    references.
    """
    return sys.getsizeof(obj) / max(1, sys.getrefcount(obj) - 3)


def _row_parts(tally: Tally, prefix: str, row: Row) -> None:
    size = sys.getsizeof
    tally.add(
        f"{prefix}: Row objects and column tuples",
        size(row) + size(row.values) + size(row._hash),  # a hash past the small ints
    )
    tally.add(
        f"{prefix}: column values (bytes)",
        sum(_shared_size(v) for v in row.values if v is not None),
    )
    cached = [row._text_cells, row._binary_cells, row._copy_text]
    tally.add(
        f"{prefix}: cached wire encodings (DataRow cells, COPY text)",
        sum(size(c) for c in cached if c is not None),
    )


def tally_view(
    collection: Collection, queues: Iterable[Iterable[object]], unsent: int = 0
) -> tuple[Tally, dict[str, int]]:
    """The structures of a kept view, its subscriptions' queued messages and the bytes
    the sessions hold unsent; returns the tally and the counts of what was walked."""
    tally = Tally()
    size = sys.getsizeof
    seen: set[int] = set()
    index: float = size(collection.by_key)
    rows = 0
    # Not items(), whose reused pair holds a key, nor a loop variable left holding one:
    # either would change the reference counts the values are split by.
    index += sum(_shared_size(key) for key in collection.by_key)
    for bucket in collection.by_key.values():
        index += size(bucket)
        for row in bucket:
            seen.add(id(row))
            rows += 1
            _row_parts(tally, "view rows", row)
    tally.add("per-key index (dict of key -> rows)", index, len(collection.by_key))
    updates = 0
    history: float = size(collection.history)
    for _ts, batch in collection.history:
        history += size(batch) + 56  # the (ts, list) pair
        for update in batch:
            updates += 1
            history += size(update)
            if id(update.row) not in seen:
                seen.add(id(update.row))
                _row_parts(tally, "rows only the history holds", update.row)
    tally.add("retained history (Update tuples and lists)", history, updates)
    events = 0
    queued = 0.0
    for queue in queues:
        for message in queue:
            queued += size(message)
            if isinstance(message, list):
                for event in message:
                    events += 1
                    queued += size(event)
                    for part in event:
                        if isinstance(part, Row) and id(part) not in seen:
                            seen.add(id(part))
                            _row_parts(tally, "rows only the queues hold", part)
    tally.add("subscription queues (event tuples and lists)", queued, events)
    tally.add("sessions' unsent output (asyncio transports and buffers)", unsent)
    counts = {
        "keys": len(collection.by_key),
        "rows": rows,
        "history_times": len(collection.history),
        "history_updates": updates,
        "queued_events": events,
        "distinct_rows": len(seen),
    }
    return tally, counts


def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _glibc() -> dict[str, float]:
    """glibc's heap: in use, free (kept, not returned to the system), mmapped."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "heap_mb": round(info.arena / _MB, 1),
        "heap_in_use_mb": round(info.uordblks / _MB, 1),
        "heap_free_mb": round(info.fordblks / _MB, 1),
        "mmapped_mb": round(info.hblkhd / _MB, 1),
    }


_PYMALLOC = {
    "arenas": re.compile(r"# arenas allocated current\s*=\s*([\d,]+)"),
    "allocated_blocks": re.compile(r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    "available_blocks": re.compile(r"# bytes in available blocks\s*=\s*([\d,]+)"),
    "free_pools": re.compile(r"\d+ unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
}


def _pymalloc() -> dict[str, float]:
    """pymalloc's arenas (objects up to 512 bytes): used, free inside used pools, and
    free pools, from sys._debugmallocstats (which writes to fd 2 only)."""
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    out: dict[str, float] = {}
    for name, pattern in _PYMALLOC.items():
        m = pattern.search(text)
        if m:
            value = int(m.group(1).replace(",", ""))
            out[name if name == "arenas" else f"{name}_mb"] = (
                value if name == "arenas" else round(value / _MB, 1)
            )
    return out


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("/devstack/", "/site-packages/", "/lib/python3"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    return f"{name}:{frame.lineno}: {linecache.getline(frame.filename, frame.lineno).strip()}"


def _traced() -> dict[str, Any]:
    if not tracemalloc.is_tracing():
        return {"on": False}
    current, peak = tracemalloc.get_traced_memory()
    # One grouping pass (by traceback), summed by innermost line here: each pass over
    # millions of traces takes tens of seconds, and a filter pass costs more.
    by_trace = tracemalloc.take_snapshot().statistics("traceback")
    lines: dict[tracemalloc.Frame, list[int]] = {}
    for stat in by_trace:
        tally = lines.setdefault(stat.traceback[-1], [0, 0])  # oldest frame first
        tally[0] += stat.size
        tally[1] += stat.count
    by_line = sorted(lines.items(), key=lambda item: -item[1][0])[:_TOP]
    return {
        "on": True,
        "frames": tracemalloc.get_traceback_limit(),
        "traced_mb": round(current / _MB, 1),
        "traced_peak_mb": round(peak / _MB, 1),
        "own_mb": round(tracemalloc.get_tracemalloc_memory() / _MB, 1),
        "top_lines": [
            {"where": _where(frame), "mb": round(size / _MB, 2), "count": count}
            for frame, (size, count) in by_line
        ],
        "top_tracebacks": [
            {
                "frames": [_where(f) for f in reversed(s.traceback)],  # innermost first
                "mb": round(s.size / _MB, 2),
                "count": s.count,
            }
            for s in by_trace[:_TOP]
        ],
    }


def start_tracing(frames: int) -> None:
    """Trace allocations from now on, ``frames`` frames a traceback (call first thing,
    for the fullest picture)."""
    tracemalloc.start(frames)


def report(path: str, reason: str, engine: Engine, sessions: Iterable[Session]) -> None:
    """Write the report (JSON) to ``path``, atomically. Raises OSError if it cannot be
    written."""
    status = _proc_status()  # first: the walk below allocates
    started = time.monotonic()
    # Read-only peeks at other modules' private state, so that a diagnostic adds no
    # API to them.
    unsent = 0
    relation = engine._view
    subscriptions = {id(sub): sub for sub in relation.subscribers} if relation else {}
    for session in sessions:
        transport = session.writer.transport
        unsent += session._out_size + (transport.get_write_buffer_size() if transport else 0)
        # a subscription that ended (fell behind, UP TO) keeps its queue until the
        # client has read it, no longer among the view's subscribers
        held = [c.sub for c in session.cursors.values()]
        held += [p.sub for p in session.portals.values()]
        subscriptions.update((id(sub), sub) for sub in held if sub is not None)
    view = relation.collection if relation is not None else None
    if relation is not None and view is not None:
        queues = [sub._queue for sub in subscriptions.values()]
        tally, counts = tally_view(view, queues, unsent)
    else:
        tally, counts = Tally(), {}
    structures = tally.rows()
    out: dict[str, Any] = {
        "reason": reason,
        "pid": os.getpid(),
        "at": time.time(),
        "rss_mb": round(status.get("VmRSS", 0) / _MB, 1),
        "rss_peak_mb": round(status.get("VmHWM", 0) / _MB, 1),
        "counts": counts,
        "structures": structures,
        "structures_mb": round(sum(s["mb"] for s in structures), 1),
        "allocator": {"pymalloc": _pymalloc(), "glibc": _glibc()},
        "tracemalloc": _traced(),
    }
    out["seconds_to_write"] = round(time.monotonic() - started, 2)
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(out, indent=1))
    temporary.replace(target)
