"""common.index.seconds_of_time_value: OpenSearch's time settings, as gc_deletes is read."""

from __future__ import annotations

import pytest

from searchsync.common.index import seconds_of_time_value


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        ("2h", 7200.0),
        ("3m", 180.0),
        ("86400s", 86400.0),
        ("1500micros", 0.0015),
        ("0s", 0.0),
        ("-1", float("inf")),
    ],
)
def test_a_time_value_in_seconds(text: str, seconds: float) -> None:
    assert seconds_of_time_value(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10 weeks", "1y", "abc", "10"])
def test_what_cannot_be_read_is_none(text: str) -> None:
    assert seconds_of_time_value(text) is None
