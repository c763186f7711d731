"""When to write progress entries: at most once per PROGRESS_INTERVAL_MS, only on news.

Pure, no clock of its own. A progress entry (``op`` ``p``) tells a consumer of an
idle partition how far the frontier has moved, so its applied-through timestamp
(and the reconcile that waits for it) keeps up even when no data reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProgressPacer"]


@dataclass(slots=True)
class ProgressPacer:
    interval_ms: int
    _last_sent_ms: float | None = None
    _last_frontier: int | None = None

    def due(self, now_ms: float, frontier: int) -> bool:
        """Whether to write progress entries for ``frontier`` now.

        True when the frontier moved since the last progress entries and at least
        ``interval_ms`` has passed (or none were ever written). The caller calls
        :meth:`sent` once they are in Redis.
        """
        if self._last_frontier is not None and frontier <= self._last_frontier:
            return False
        if self._last_sent_ms is None:
            return True
        return now_ms - self._last_sent_ms >= self.interval_ms

    def sent(self, now_ms: float, frontier: int) -> None:
        self._last_sent_ms = now_ms
        self._last_frontier = frontier
