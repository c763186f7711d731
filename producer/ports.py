"""The seams between the producer's orchestrators and the services they talk to.

producer.session (SUBSCRIBE) and producer.polling (USE_SUBSCRIBE=false) decide
what to read, what to write and when the checkpoint moves; these protocols are
how: a row source (the SUBSCRIBE cursor on Materialize), a poll source (one
polling read transaction on Materialize), a digest store (the polling digests in
Redis), an entry sink (the partitioned streams and the checkpoint in Redis,
producer.writer.StreamWriter) and the backpressure gate (producer.backpressure).
producer.adapters builds the real ones; a simulation (tests/sim) passes its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ..common.config import Settings
from ..common.entries import DeadLetter
from .batches import Entry
from .documents import ColumnKind, DocumentEncoder
from .rows import Layout

__all__ = [
    "Backpressure",
    "DigestStore",
    "EntrySink",
    "OpenPollSource",
    "OpenRows",
    "PollRead",
    "PollSource",
    "RowSource",
]


class RowSource(Protocol):
    """One declared SUBSCRIBE; ``layout`` and ``encoder`` are known after the first fetch.

    Raises psycopg.Error as Materialize reports it.
    """

    layout: Layout | None
    encoder: DocumentEncoder | None

    async def declare(self, *, as_of: int | None, snapshot: bool, at_least: bool = False) -> None:
        """BEGIN; DECLARE the cursor ``AS OF [AT LEAST] as_of`` (None: no AS OF)."""
        ...

    async def fetch(self) -> Sequence[tuple[Any, ...]]:
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

    async def read_checkpoint(self) -> int | None: ...

    async def read_high_water(self) -> int | None: ...


class Backpressure(Protocol):
    """Whether the buffer is too full to read more (producer.backpressure.BufferMonitor)."""

    @property
    def active(self) -> bool: ...

    async def wait_until_resumed(self) -> None: ...


# The view's columns as a read reports them: names and producer.documents kinds.
Columns = tuple[list[str], list[ColumnKind]]


class PollRead(Protocol):
    """One poll's read transaction (producer.polling). Every call raises psycopg.Error
    as Materialize reports it; none has a timeout of its own."""

    async def timestamp(self) -> int:
        """The transaction's timestamp T (``mz_now()``), asked after a one-row read of
        the view fixed the transaction's time domain."""
        ...

    def batches(self) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """Every row of the view at T, in batches as they arrive (never all held)."""
        ...

    def columns(self) -> Columns | None:
        """The columns of the rows read so far (None before the first row)."""
        ...

    async def rows_of(self, keys: Sequence[str]) -> list[Sequence[Any]]:
        """Every row of these keys at T, read again (in any order)."""
        ...


class PollSource(Protocol):
    """A Materialize connection for polling: one :class:`PollRead` per poll."""

    def read(self) -> AbstractAsyncContextManager[PollRead]:
        """A read transaction, committed on exit (rolled back on an error)."""
        ...

    async def close(self) -> None: ...


# Connect a poll source for ``settings``. Raises psycopg errors.
OpenPollSource = Callable[[Settings], Awaitable[PollSource]]


class DigestStore(Protocol):
    """The polling digests kept in Redis (``poll:digests``: field = key, value = 8
    bytes, or empty while the key is being written). Every call is bounded by the
    Redis client's socket timeout and raises RedisError; a call that fails may have
    run in part (commands are applied one by one), except :meth:`remember_at_once`
    (all or nothing). :meth:`invalidate`, :meth:`remember` and :meth:`remember_at_once`
    write only while the producer lease the session started under is held, and raise
    producer.lease.ProducerFenced otherwise (nothing written)."""

    async def load(self) -> dict[str, int] | None:
        """Every stored digest (a field being written: -1); None when none are kept."""
        ...

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Mark ``keys`` as being written."""
        ...

    async def remember(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        """Store ``digests``, drop the fields of ``forget``."""
        ...

    async def remember_at_once(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        """:meth:`remember` in one round trip: all applied, or none."""
        ...

    async def forget_all(self) -> None:
        """Delete every stored digest."""
        ...
