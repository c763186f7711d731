"""cProfile output → the functions that took the most of a process's own CPU."""

from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

__all__ = ["top_functions"]


def top_functions(stats_path: Path, count: int = 12) -> list[dict[str, Any]]:
    """The ``count`` functions with the most own time, with their share of the total."""
    stats = pstats.Stats(str(stats_path))
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values()) or 1.0
    rows = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)
    top = []
    for (file, line, name), (_, calls, own, cumulative, _) in rows[:count]:
        where = f"{Path(file).name}:{line}({name})" if line else name
        top.append(
            {
                "function": where,
                "calls": calls,
                "own_s": round(own, 3),
                "own_pct": round(100 * own / total, 1),
                "cumulative_s": round(cumulative, 3),
            }
        )
    return top
