"""Exponential backoff with jitter, as a value: no sleeping, no clock, unit-tested directly.

The runbook's policy: start at RETRY_INITIAL_BACKOFF, multiply by
RETRY_BACKOFF_MULTIPLIER after each failure, never exceed RETRY_MAX_BACKOFF, and
start over after a success. Each delay is then jittered ("equal jitter": a random
point in the upper half of the nominal delay), because eight partition runners
that meet the same 429 at the same moment would otherwise retry in lockstep and
meet it again together. The randomness is injectable so tests are exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["JITTER", "Backoff"]

# Fraction of the nominal delay that is random: delays fall in [(1 - JITTER) x, x].
JITTER = 0.5


@dataclass(slots=True)
class Backoff:
    initial: float
    maximum: float
    multiplier: float
    jitter: float = JITTER
    # uniform in [0, 1); replace it in tests
    uniform: Callable[[], float] = field(default=random.random, repr=False)
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")
        self._next = min(self.initial, self.maximum)

    def nominal(self) -> float:
        """The next delay before jitter (what the sequence is at), without advancing."""
        return self._next

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; advances the sequence."""
        nominal = self._next
        self._next = min(self._next * self.multiplier, self.maximum)
        return nominal * (1 - self.jitter * self.uniform())

    def reset(self) -> None:
        """Call after a success: the next failure waits about ``initial`` again."""
        self._next = min(self.initial, self.maximum)

    @classmethod
    def from_settings(cls, initial: float, maximum: float, multiplier: float) -> Backoff:
        return cls(initial=initial, maximum=maximum, multiplier=multiplier)
