"""``kill -USR1 <pid>``: where a searchsync process is, written to its log (stderr).

Two views, because a process can be stuck in two ways: every thread's Python stack
(faulthandler, from the signal handler itself, so it works even while the event
loop is blocked in a C call) and then every asyncio task's stack (from the loop,
so it shows which ``await`` a task is parked on when the loop is idle).
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys

__all__ = ["install_stack_dumps"]


def install_stack_dumps(loop: asyncio.AbstractEventLoop) -> None:
    """Dump thread and task stacks to stderr on SIGUSR1; call from inside ``loop``."""
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    # registered second, chaining to the loop's handler: dump threads, then wake the loop
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)


def _dump_tasks() -> None:
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio tasks", file=sys.stderr)
    for task in tasks:
        print(f"--- task {task.get_name()}", file=sys.stderr)
        for where in _awaiting(task.get_coro()):
            print(f"  {where}", file=sys.stderr)
    sys.stderr.flush()


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines ``coro`` is suspended in, outermost first (a task's
    own stack shows only its outermost frame)."""
    chain: list[str] = []
    while coro is not None and len(chain) < 50:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain
