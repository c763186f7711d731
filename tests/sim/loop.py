"""An asyncio event loop whose clock is virtual: waiting costs no real time.

The selector never blocks: when the loop would wait ``timeout`` seconds for the
next timer, the virtual clock jumps by ``timeout`` instead. With no real I/O in a
simulation (every service is an in-memory model) the order of callbacks depends
only on the program and its seed, so a run replays exactly.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["VirtualLoop"]


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        # Nothing but the loop's own wake-up pipe is registered (no thread or signal
        # wakes a simulation), so there is nothing to poll: the syscall was a tenth of
        # a schedule's time.
        if timeout is not None and timeout > 0 and self.loop is not None:
            self.loop.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual seconds since the loop was made (0.0 at start)."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0
        # timers due within this are run together; keep it tiny so order follows deadlines
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.now
