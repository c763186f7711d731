"""The Materialize side: one connection, one ``SUBSCRIBE`` cursor, FETCH in a loop.

Statements, as Materialize documents them::

    SET CLUSTER = <MZ_CLUSTER>
    BEGIN
    DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM <view>)
        [ENVELOPE UPSERT (KEY (<key>))] WITH (PROGRESS, SNAPSHOT = <bool>) [AS OF <ts>]
    FETCH <n> c        -- repeated

The FETCH form (measured against the emulator with 100 ms ticks, bench/producer.py
``fetch_forms``): ``FETCH ALL c WITH (timeout = '1s')`` gathers rows until the
timeout expires, so a change waits the whole timeout even when it is ready
(~1,006 ms; that is the documented meaning: "all rows available over the next
1s"); ``FETCH … WITH (timeout = '0s')`` never waits, so an idle stream becomes a
busy loop (~2,000 empty FETCHes/s); ``FETCH ALL c`` without timeout returns as
soon as rows are ready but has no bound, so a large snapshot arrives as one result
in memory. ``FETCH <n> c`` without timeout blocks until at least one row is ready
and returns what is ready, up to n: a change arrives within the tick (~40–90 ms
at 100 ms ticks), an idle stream costs one FETCH per tick (~10/s), memory stays
bounded — with PROGRESS a progress row arrives every tick, so it never blocks for
long. Shutdown interrupts it with a cancel request.

Reading a FETCH's rows is the one place this module does by hand what psycopg
does: psycopg's asyncio wait goes back to the event loop (add_reader, a future, a
timer, remove_reader) for every read into libpq's input buffer (~16 KB), ~75 times
for a FETCH of 2,000 rows (1.2 MB) even when all of it is already in the socket.
:class:`ReadyReadsConnection` answers those waits itself while ``poll()`` says the
socket is readable, for at most :data:`READ_BUDGET_SECONDS` before it yields to the
loop. Measured with 200,000 emulator rows: 1.2–1.7 µs of CPU per row for the bare
FETCH round trips through psycopg's wait, 0.65–0.85 µs with this one.

``AsyncConnection.wait`` is not a documented extension point, so the override is
used only on the psycopg releases it was read against (:data:`READY_READS_PSYCOPG`:
3.2.0, 3.2.13, 3.3.0 and 3.3.9 read; in all of them every wait of a query goes
through ``wait(gen, …)``, the generator yields ``Wait`` and is sent ``Ready``, and the
keyword arguments after ``gen`` differ, so they are passed on untouched).
:func:`connection_class` gives plain ``psycopg.AsyncConnection`` on any other release
and logs once which path it took; the rows are the same either way, the plain path
only costs more CPU per row: ``python -m bench.fetch_wait`` (a 200,000-row snapshot,
FETCH 2000 with the producer's text loaders, 5 alternating runs of each, medians;
2026-12-04, psycopg 3.3.9) measured 1.37 µs of client CPU a row with ready reads and
1.88 with psycopg's wait (0.73×), 378k against 304k rows/s; under other engineers'
load the same hour 1.97 against 2.34 µs (0.84×), 110k against 107k rows/s.

What a FETCH returns: psycopg's ``fetchall`` builds a tuple and a ``str`` per value,
which for a snapshot row the C path only reads to write the document. So a FETCH of
at least :data:`~producer.results.RAW_MIN_ROWS` rows comes back as
:class:`~producer.results.ResultRows`: the rows stay in libpq's result, the
snapshot's fast path holds them as they are and the document is written from the
result's text (producer/results.py says when; any row that leaves the fast path is
loaded by psycopg when it is asked for). ``python -m bench.headroom --against``
compares it with the code before it, producer CPU a row (README "Measured").
"""

from __future__ import annotations

import functools
import itertools
import logging
import select
from collections.abc import Sequence
from time import monotonic
from typing import Any, Final, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

from ..common import materialize
from ..common.config import Settings
from . import native
from .documents import DocumentEncoder, kind_of_type, register_text_loaders
from .results import RAW_MIN_ROWS, ResultRows, raw_kinds
from .rows import FIRST_VALUE, Layout

__all__ = [
    "CURSOR",
    "FETCH_ROWS",
    "READY_READS_PSYCOPG",
    "READ_BUDGET_SECONDS",
    "ReadyReadsConnection",
    "Subscription",
    "connect",
    "connection_class",
    "declare_statement",
    "fetch_statement",
    "read_while_ready",
    "ready_reads_supported",
]

log = logging.getLogger("searchsync.producer.subscribe")

CURSOR: Final = "searchsync_c"
# Rows per FETCH: ~1.5 KB each once loaded and two batches in flight (one being
# written, one fetched), so ~6 MB; 200k rows of backlog cost 100 round trips. 5000
# was no faster and cost 20 MB more peak RSS in bench/producer.py; measured again
# with the snapshot fast path and ready reads, 1000, 2000 and 5000 rows per FETCH
# cost the same CPU per row within the box's noise (the same runs; the producer's
# figures are in the README's "Measured" table).
FETCH_ROWS: Final = 2000
CANCEL_TIMEOUT_SECONDS: Final = 2.0
# How long one wait may keep the event loop to itself reading data that is ready
# (psycopg's own bound for busy generators is the same 5 ms).
READ_BUDGET_SECONDS: Final = 0.005
# psycopg release series (major, minor) whose AsyncConnection.wait the override was
# read against (module docstring); the lowest-versions run (scripts/test-lowest) runs
# it on the lowest the dependency range allows, ./scripts/test on constraints.txt's.
READY_READS_PSYCOPG: Final = frozenset({(3, 2), (3, 3)})

RV = TypeVar("RV")


def read_while_ready(gen: PQGen[RV], fileno: int, budget: float = READ_BUDGET_SECONDS) -> PQGen[RV]:
    """``gen`` as psycopg drives it, except that a wait for reading is answered at
    once while ``fileno`` already has data, for at most ``budget`` seconds in a row.

    Every other wait (writing, or reading with nothing there yet) is passed on to
    the caller, which waits on the event loop.
    """
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    poll = poller.poll
    try:
        state = next(gen)
        until = monotonic() + budget
        while True:
            if state == Wait.R and poll(0) and monotonic() < until:
                state = gen.send(Ready.R)
                continue
            ready = yield state
            until = monotonic() + budget
            state = gen.send(ready)
    except StopIteration as done:
        result: RV = done.value
        return result


class ReadyReadsConnection(psycopg.AsyncConnection[Any]):
    """An AsyncConnection whose waits read ready data without an event-loop round trip
    (see the module docstring). Use :func:`connection_class`, which gives this class
    only on the psycopg releases it was written for."""

    async def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        # The arguments after gen changed between releases (3.2.0: interval may be
        # None; 3.3.9 adds timeout): whatever psycopg's caller passed goes on as is.
        return await super().wait(read_while_ready(gen, self.pgconn.socket), *args, **kwargs)


@functools.cache
def _log_wait_path(version: str, supported: bool) -> None:
    if supported:
        log.info("psycopg %s: FETCH results are read with ready reads", version)
    else:
        log.info(
            "psycopg %s is not a release the ready-read wait was written for (%s): "
            "FETCH results are read through psycopg's own wait (same rows, more CPU a row)",
            version,
            ", ".join(f"{major}.{minor}" for major, minor in sorted(READY_READS_PSYCOPG)),
        )


def ready_reads_supported(version: str) -> bool:
    """Whether psycopg ``version`` (``psycopg.__version__``) is of a release series
    in :data:`READY_READS_PSYCOPG`; anything unparsable is not."""
    major, _, rest = version.partition(".")
    minor = "".join(itertools.takewhile(str.isdigit, rest))
    if not (major.isdigit() and minor):
        return False
    return (int(major), int(minor)) in READY_READS_PSYCOPG


def connection_class(
    version: str = psycopg.__version__,
) -> type[psycopg.AsyncConnection[Any]]:
    """The connection class for SUBSCRIBE and snapshot reads: :class:`ReadyReadsConnection`
    on the psycopg releases it was read against, plain ``psycopg.AsyncConnection`` on
    any other. The first call for a version logs which (INFO)."""
    supported = ready_reads_supported(version)
    _log_wait_path(version, supported)
    return ReadyReadsConnection if supported else psycopg.AsyncConnection


Envelope = Literal["diffs", "upsert"]


def declare_statement(
    view: str,
    *,
    as_of: int | None,
    snapshot: bool,
    envelope: Envelope,
    key_column: str,
    at_least: bool = False,
) -> sql.Composed:
    """The DECLARE … CURSOR FOR SUBSCRIBE statement (clauses in the documented order);
    ``at_least``: ``AS OF AT LEAST`` (Materialize picks a readable timestamp >= as_of)."""
    parts: list[sql.Composable] = [
        sql.SQL("DECLARE {} CURSOR FOR SUBSCRIBE (SELECT * FROM {})").format(
            sql.Identifier(CURSOR), sql.Identifier(view)
        )
    ]
    if envelope == "upsert":
        parts.append(sql.SQL("ENVELOPE UPSERT (KEY ({}))").format(sql.Identifier(key_column)))
    parts.append(sql.SQL("WITH (PROGRESS, SNAPSHOT = {})").format(sql.SQL(str(snapshot).lower())))
    if as_of is not None:
        clause = "AS OF AT LEAST {}" if at_least else "AS OF {}"
        parts.append(sql.SQL(clause).format(sql.Literal(int(as_of))))
    return sql.SQL(" ").join(parts)


def fetch_statement(rows: int = FETCH_ROWS) -> sql.Composed:
    """``FETCH <rows> c``: blocks until a row is ready, returns up to ``rows`` ready ones."""
    return sql.SQL("FETCH {} {}").format(sql.Literal(int(rows)), sql.Identifier(CURSOR))


async def connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    """A connection to Materialize on MZ_CLUSTER, numeric/timestamps loaded as text.

    Raises psycopg.OperationalError when Materialize is unreachable or refuses the
    login, psycopg.Error when the cluster does not exist.
    """
    conn = await materialize.connect(
        settings, application_name="searchsync-producer", connection_class=connection_class()
    )
    register_text_loaders(conn.adapters)
    return conn


class Subscription:
    """One declared SUBSCRIBE cursor on ``conn``; :meth:`fetch` returns raw rows.

    ``layout`` and ``encoder`` are known after the first FETCH (that is when the
    server describes the columns).
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        view: str,
        envelope: Envelope,
        key_column: str,
        fetch_rows: int = FETCH_ROWS,
    ) -> None:
        self._conn = conn
        self._view = view
        self._envelope: Envelope = envelope
        self._key_column = key_column
        self._fetch = fetch_statement(fetch_rows)
        self.layout: Layout | None = None
        self.encoder: DocumentEncoder | None = None
        # the view columns' raw kinds when results can be read in C (producer.results)
        self._raw_kinds: bytes | None = None

    async def declare(self, *, as_of: int | None, snapshot: bool, at_least: bool = False) -> None:
        """BEGIN and DECLARE the cursor. Raises psycopg.Error as Materialize reports it."""
        statement = declare_statement(
            self._view,
            as_of=as_of,
            snapshot=snapshot,
            envelope=self._envelope,
            key_column=self._key_column,
            at_least=at_least,
        )
        await self._conn.execute("BEGIN")
        await self._conn.execute(statement)

    async def fetch(self) -> Sequence[tuple[Any, ...]]:
        """The next rows (at least one). Raises psycopg.Error (QueryCanceled on cancel).

        A large result (snapshot, backlog) comes as :class:`~producer.results.ResultRows`,
        its rows left in libpq's result for the C path, when the view's columns allow
        it (producer.results); otherwise, and for a few rows, as a list from ``fetchall``.
        """
        cursor = await self._conn.execute(self._fetch)
        if self.layout is None:
            self._describe(cursor.description or ())
        result = cursor.pgresult
        if self._raw_kinds is not None and result is not None and result.ntuples >= RAW_MIN_ROWS:
            return ResultRows(cursor, FIRST_VALUE, self._raw_kinds)
        return await cursor.fetchall()

    def _describe(self, description: Sequence[psycopg.Column]) -> None:
        names = [column.name for column in description]
        self.layout = Layout.from_columns(names, self._envelope, self._key_column)
        kinds = [kind_of_type(column.type_code) for column in description[FIRST_VALUE:]]
        self.encoder = DocumentEncoder(self.layout.columns, kinds)
        if (
            self._envelope == "diffs"  # the snapshot fast path is the diffs envelope's
            and self._conn.info.encoding == "utf-8"
            and native.raw_results()
        ):
            self._raw_kinds = raw_kinds(description, FIRST_VALUE, self.layout.key_index)

    async def cancel(self) -> None:
        """Ask the server to cancel the running FETCH; errors are logged, not raised."""
        try:
            await self._conn.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)
        except Exception as error:  # the connection may already be gone
            log.debug("cancel request failed: %s", error)

    async def close(self) -> None:
        """Close the connection (ends the transaction and the subscription)."""
        await self._conn.close()
