"""producer/backpressure.py: the hysteresis state machine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.producer.backpressure import Hysteresis


def test_pauses_above_threshold_and_resumes_below_resume() -> None:
    state = Hysteresis(threshold=5000, resume=2500)
    assert state.observe(5000) is None  # at the threshold: not above it
    assert state.observe(5001) == "activated"
    assert state.observe(9000) is None
    assert state.observe(2500) is None  # in between: stay paused
    assert state.active
    assert state.observe(2499) == "released"
    assert state.observe(4000) is None
    assert not state.active


def test_resume_must_be_below_threshold() -> None:
    with pytest.raises(ValueError, match="below"):
        Hysteresis(threshold=10, resume=10)


@given(st.lists(st.integers(0, 10_000), max_size=60))
def test_transitions_alternate_and_match_the_state(buffers: list[int]) -> None:
    state = Hysteresis(threshold=5000, resume=2500)
    last = "released"
    for buffer in buffers:
        transition = state.observe(buffer)
        if transition is not None:
            assert transition != last
            last = transition
        assert state.active == (last == "activated")
        if buffer > 5000:
            assert state.active
        if buffer < 2500:
            assert not state.active
