"""The seams between a SUBSCRIBE session and the services it talks to.

producer.session decides what to read, consolidate and write, and when the
checkpoint moves; these protocols are how: a row source (the SUBSCRIBE cursor on
Materialize), an entry sink (the partitioned streams and the checkpoint in Redis,
producer.writer.StreamWriter) and the backpressure gate (producer.backpressure).
producer.adapters opens the real row source; a simulation can pass its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..common.config import Settings
from ..common.entries import DeadLetter
from .batches import Entry
from .documents import DocumentEncoder
from .rows import Layout

__all__ = ["Backpressure", "EntrySink", "OpenRows", "RowSource"]


class RowSource(Protocol):
    """One declared SUBSCRIBE; ``layout`` and ``encoder`` are known after the first fetch.

    Raises psycopg.Error as Materialize reports it.
    """

    layout: Layout | None
    encoder: DocumentEncoder | None

    async def declare(self, *, as_of: int | None, snapshot: bool) -> None: ...

    async def fetch(self) -> list[tuple[Any, ...]]:
        """The next rows (at least one); psycopg.errors.QueryCanceled after :meth:`cancel`."""
        ...

    async def cancel(self) -> None:
        """Ask the server to cancel the running fetch; never raises."""
        ...

    async def close(self) -> None: ...


# Connect a row source for ``settings``; also returns Materialize's
# idle_in_transaction_session_timeout in seconds (0: none).
OpenRows = Callable[[Settings], Awaitable[tuple[RowSource, float | None]]]


class EntrySink(Protocol):
    """The streams and the checkpoint (producer.writer.StreamWriter). Raises RedisError."""

    async def write(
        self,
        entries: Sequence[Entry],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        high_water: int | None = None,
    ) -> None: ...

    async def commit(self, frontier: int) -> None: ...

    async def mark_reconcile(self, ts: int) -> None: ...


class Backpressure(Protocol):
    """Whether the buffer is too full to read more (producer.backpressure.BufferMonitor)."""

    @property
    def active(self) -> bool: ...

    async def wait_until_resumed(self) -> None: ...
