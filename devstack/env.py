"""The devstack's service addresses, for tests, benchmarks and tools.

``devstack/up`` records every address in ``.devstack/env`` (bash ``export`` lines);
:func:`devstack_env` reads that file and lets the process environment override
it, so ``source .devstack/env`` and a bare checkout with a running devstack give
the same answer.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ENV_FILE", "devstack_env", "require"]

ENV_FILE = Path(__file__).resolve().parent.parent / ".devstack" / "env"


def devstack_env(path: Path = ENV_FILE) -> dict[str, str]:
    """Every variable of ``.devstack/env``, overridden by the same names in os.environ."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, raw = line.strip().removeprefix("export ").partition("=")
            if sep and name.isidentifier():
                parts = shlex.split(raw) if raw else [""]
                values[name] = parts[0] if parts else ""
    for name in values:
        if os.environ.get(name):
            values[name] = os.environ[name]
    return values


def require(names: Iterable[str], path: Path = ENV_FILE) -> dict[str, str]:
    """:func:`devstack_env` restricted to ``names``; RuntimeError naming what is missing."""
    found = devstack_env(path)
    wanted = list(names)
    for name in wanted:
        if os.environ.get(name):
            found[name] = os.environ[name]
    missing = [name for name in wanted if not found.get(name)]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: start the devstack (devstack/up) "
            "and `source .devstack/env`"
        )
    return {name: found[name] for name in wanted}
