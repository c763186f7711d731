"""CPU seconds and resident memory of named groups of processes, read from /proc.

A group is every process one part of the pipeline runs as: the producer, each
consumer, the emulator, PostgreSQL (the postmaster and its backends), Redis, the
OpenSearch JVM, the load generator. :class:`Sampler` reads them once a second;
CPU is the difference of the kernel's counters between two samples (so processes
that end in between keep what they used up to their last sample), memory the
largest resident set seen of any one process of the group (the backends of
PostgreSQL share its buffers, so adding their RSS would count them many times).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Sampler", "children_of", "cpu_ticks", "pid_file", "rss_bytes", "set_affinity", "threads_of",
]  # fmt: skip

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat.

    The command name (field 2) may hold spaces and parentheses, so fields are counted
    after its closing parenthesis.
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def rss_bytes(statm: str) -> int:
    """Resident set size from the text of /proc/<pid>/statm."""
    return int(statm.split()[1]) * _PAGE


def _read(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children_of(parent: int) -> list[int]:
    """``parent`` and its direct children (PostgreSQL's backends are the postmaster's)."""
    found = [parent]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(int(entry.name), "stat")
        if stat is not None and int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def threads_of(pid: int) -> list[int]:
    """The thread ids of ``pid`` (a JVM has dozens; Redis and Python a few)."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def set_affinity(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of each process on ``cpus`` (a thread a process starts later
    inherits its creator's); a thread that ended meanwhile is skipped."""
    for pid in pids:
        for tid in threads_of(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                continue


def pid_file(path: Path) -> int | None:
    """The pid on the first line of ``path`` (postmaster.pid, opensearch.pid), or None."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


@dataclass
class _Group:
    pids: Callable[[], Iterable[int]]
    last: dict[int, int] = field(default_factory=dict)  # pid -> ticks at the last sample
    ticks: int = 0  # used since the window started
    max_rss: int = 0
    processes: int = 0


class Sampler:
    """Named process groups; :meth:`sample` once a second, :meth:`window` to read and reset."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def add(self, name: str, pids: Callable[[], Iterable[int]]) -> None:
        """``pids`` is asked at every sample (PostgreSQL's backends come and go)."""
        self._groups[name] = _Group(pids)

    def remove(self, name: str) -> None:
        self._groups.pop(name, None)

    def sample(self) -> dict[str, float]:
        """Read every group once; returns each group's largest RSS now (MB)."""
        now: dict[str, float] = {}
        for name, group in self._groups.items():
            seen: dict[int, int] = {}
            largest = 0
            for pid in group.pids():
                stat, statm = _read(pid, "stat"), _read(pid, "statm")
                if stat is None or statm is None:
                    continue
                ticks = cpu_ticks(stat)
                seen[pid] = ticks
                group.ticks += ticks - group.last.get(pid, ticks)
                largest = max(largest, rss_bytes(statm))
            group.max_rss = max(group.max_rss, largest)
            group.last = seen
            group.processes = max(group.processes, len(seen))
            now[name] = round(largest / 2**20, 1)
        return now

    def window(self) -> dict[str, dict[str, Any]]:
        """CPU seconds and max RSS per group since the last call (or the first sample)."""
        report = {
            name: {
                "cpu_s": round(group.ticks / _TICKS, 2),
                "max_rss_mb": round(group.max_rss / 2**20, 1),
                "processes": group.processes,
            }
            for name, group in self._groups.items()
        }
        for group in self._groups.values():
            group.ticks, group.max_rss, group.processes = 0, 0, 0
        return report
