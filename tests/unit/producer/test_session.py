"""producer/session.py's pure parts: reading Materialize's idle timeout, the pause limit."""

from __future__ import annotations

import pytest

from searchsync.producer.session import PAUSE_FRACTION, interval_seconds, pause_limit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2min", 120.0),  # PostgreSQL's and the emulator's SHOW
        ("2 min", 120.0),
        ("120s", 120.0),
        ("120000 ms", 120.0),
        ("120000", 120.0),  # a bare number is the setting's unit: ms
        ("1h", 3600.0),
        ("00:02:00", 120.0),
        ("1min 30s", 90.0),
        ("0", 0.0),
        ("3s", 3.0),
    ],
)
def test_interval_seconds(text: str, seconds: float) -> None:
    assert interval_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2 fortnights", "1:2", "-5s"])
def test_unreadable_intervals(text: str) -> None:
    assert interval_seconds(text) is None


def test_a_pause_may_last_a_safe_fraction_of_the_timeout() -> None:
    assert pause_limit(120.0) == 120.0 * PAUSE_FRACTION == 60.0
    assert pause_limit(0.0) is None  # no timeout: a pause may last for ever
    assert pause_limit(None) is None
