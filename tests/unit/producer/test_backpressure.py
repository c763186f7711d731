"""producer/backpressure.py: the hysteresis state machine, and the one wait for it to lift."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.producer.backpressure import Hysteresis, wait_out


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


class Gate:
    """The Backpressure protocol (producer.ports) over an event: set = released."""

    def __init__(self, *, active: bool) -> None:
        self.released = asyncio.Event()
        if not active:
            self.released.set()

    @property
    def active(self) -> bool:
        return not self.released.is_set()

    async def wait_until_resumed(self) -> None:
        await self.released.wait()


async def test_wait_out_returns_at_once_when_not_paused_or_stopped() -> None:
    stop = asyncio.Event()
    assert await wait_out(Gate(active=False), stop) == "resumed"
    stop.set()
    assert await wait_out(Gate(active=False), stop) == "stopped"  # a stop comes first


async def test_wait_out_until_released_or_stopped() -> None:
    gate, stop = Gate(active=True), asyncio.Event()
    waiting = asyncio.create_task(wait_out(gate, stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.released.set()
    assert await waiting == "resumed"
    gate = Gate(active=True)
    waiting = asyncio.create_task(wait_out(gate, stop))
    await asyncio.sleep(0)
    stop.set()
    assert await waiting == "stopped"


async def test_wait_out_gives_up_after_its_limit() -> None:
    assert await wait_out(Gate(active=True), asyncio.Event(), 0.01) == "timed out"
