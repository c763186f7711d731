"""common/diagnostics.py: the await chain of a suspended task (SIGUSR1's task view)."""

from __future__ import annotations

import asyncio

from searchsync.common.diagnostics import _awaiting


async def inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def outer(gate: asyncio.Event) -> None:
    await inner(gate)


async def test_the_chain_names_every_coroutine_down_to_the_wait() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(outer(gate))
    await asyncio.sleep(0)  # let it run up to gate.wait()
    chain = [where.rsplit(" in ", 1)[1] for where in _awaiting(task.get_coro())]
    gate.set()
    await task
    assert chain[:3] == ["outer", "inner", "wait"]
