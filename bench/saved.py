"""Saved results: each bench's JSON in ``bench/results/<scenario>.json``, with the machine;
and what every bench's command line shares (``--save``, ``--quick``, the JSON line).

``--save`` on a bench writes its result there (the last run of a scenario replaces
the one before); ``python -m bench.report`` turns the saved files into
``bench/results/README.md`` and its plots. The machine's facts go with every result,
because a figure means nothing without the box it was measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "common_arguments", "emit", "int_list", "machine", "save"]

RESULTS = Path(__file__).resolve().parent / "results"


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _opensearch_version() -> str | None:
    from devstack.env import devstack_env

    env = devstack_env()
    url = f"http://{env.get('OS_HOST', '127.0.0.1')}:{env.get('OS_PORT', '9200')}/"
    try:
        import urllib.request

        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(json.loads(reply.read())["version"]["number"])
    except (OSError, KeyError, ValueError):
        return None


def _command(*argv: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _version(text: str | None, marker: str) -> str | None:
    """The version after ``marker`` in a ``--version`` line ("v=7.0.15 sha=…" → 7.0.15)."""
    if text is None or marker not in text:
        return text
    return text.split(marker, 1)[1].split()[0]


def machine() -> dict[str, Any]:
    """Cores, memory, kernel, Python, Redis, PostgreSQL and OpenSearch versions, commit."""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis": _version(_command("redis-server", "--version"), "v="),
        "postgresql": _version(_command("psql", "--version"), "(PostgreSQL) "),
        "opensearch": _opensearch_version(),
        "commit": _command("git", "-C", str(RESULTS.parent.parent), "rev-parse", "--short", "HEAD"),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(result: dict[str, Any], command: str) -> Path:
    """Write ``result`` (with ``command`` and :func:`machine`) to its scenario's file."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{result['scenario']}.json"
    path.write_text(json.dumps({**result, "command": command, "machine": machine()}, indent=1))
    return path


def int_list(text: str) -> list[int]:
    """``1,2,4`` → ``[1, 2, 4]`` (argparse type)."""
    return [int(part) for part in text.split(",") if part]


def common_arguments(parser: argparse.ArgumentParser, quick: str) -> None:
    """``--save`` and ``--quick`` (``quick`` says what the smoke run does)."""
    parser.add_argument("--save", action="store_true", help="also bench/results/<scenario>.json")
    parser.add_argument("--quick", action="store_true", help=quick)


def emit(result: dict[str, Any], args: argparse.Namespace, module: str, argv: list[str]) -> None:
    """The result as the last line of stdout; with ``--save`` also its file (stderr says where)."""
    print(json.dumps(result), flush=True)
    if args.save:
        path = save(result, " ".join([f"python -m {module}", *argv]))
        print(f"saved to {path}", file=sys.stderr)
