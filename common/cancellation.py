"""Honouring a task's cancellation that a library swallowed.

redis-py 8.1 (hiredis, Python 3.11) loses a cancellation delivered while a command
is in flight in about a third of attempts: the command returns normally and the
task runs on (tests/integration/test_cancellation.py measures it against the
devstack Redis). Shutdown cancels background loops and waits for them, so such a
loop never ended and the producer outlived its SIGTERM deadline (seen in
tests/faults/test_producer_faults.py, 1 run in ~6). asyncio still counts the
request (``Task.cancelling()``), so a loop that only ends by cancellation calls
:func:`raise_if_cancelled` after each await that may swallow it.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to cancel and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
