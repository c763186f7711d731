"""Exponential backoff as a value: no sleeping, no clock, so it is unit-tested directly.

The runbook's policy: start at RETRY_INITIAL_BACKOFF, multiply by
RETRY_BACKOFF_MULTIPLIER after each failure, never exceed RETRY_MAX_BACKOFF,
and start over after a success.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    initial: float
    maximum: float
    multiplier: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = min(self.initial, self.maximum)

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; advances the sequence."""
        delay = self._next
        self._next = min(self._next * self.multiplier, self.maximum)
        return delay

    def reset(self) -> None:
        """Call after a success: the next failure waits ``initial`` again."""
        self._next = min(self.initial, self.maximum)

    @classmethod
    def from_settings(cls, initial: float, maximum: float, multiplier: float) -> Backoff:
        return cls(initial=initial, maximum=maximum, multiplier=multiplier)
