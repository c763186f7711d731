"""A client connection's state and plumbing, the base of :class:`~devstack.mzemu.session.Session`.

What every part of the session shares: the buffered output (one write per flush, a
flush at 256 KiB), reading frames from the client, the transaction-block state,
cursors, prepared statements and portals, the PostgreSQL link, cancellation of a
statement that waits (:meth:`Connection._cancellable`), and sending result rows.

The session is built in layers, each a module that adds one concern on top of the
ones below it: ``connection`` (this) → ``variables`` (SET/RESET/SHOW) →
``transactions`` (blocks, BEGIN/COMMIT/ROLLBACK) → ``passthrough`` (relaying to
PostgreSQL) → ``cursors`` (DECLARE/FETCH/CLOSE of a SUBSCRIBE) → ``streaming`` (a bare
SUBSCRIBE, COPY (SUBSCRIBE) TO STDOUT) → ``execute`` (running one statement) →
``extended`` (the extended query protocol) → ``session`` (startup, the message loop,
the simple query protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from devstack.mzemu import errors, wire
from devstack.mzemu.backend import PgLink
from devstack.mzemu.engine import Plan
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.output import Event, normalize_formats
from devstack.mzemu.statements import Statement
from devstack.mzemu.subscription import Subscription
from devstack.mzemu.values import binary_encoder
from devstack.mzemu.wire import ColumnDesc

if TYPE_CHECKING:
    from devstack.mzemu.backend import LinkParams
    from devstack.mzemu.engine import Engine


class Host(Protocol):
    """What a connection uses of the server that accepted it (devstack.mzemu.server.Server:
    a protocol, so the layers below the server do not import it back)."""

    engine: Engine
    link_params: LinkParams

    def cancel(self, pid: int, secret: int) -> None: ...

    def drop_connections(self, except_pid: int) -> int: ...


__all__ = ["AlreadyReported", "Connection", "Cursor", "Exec", "Portal", "Prepared", "Vars"]


T = TypeVar("T")

CLUSTERS = frozenset(
    {"serving", "compute", "quickstart", "mz_catalog_server", "mz_system", "mz_probe"}
)
DEFAULT_CLUSTER = "quickstart"
_FLUSH_BYTES = 1 << 18
_CHUNK_EVENTS = 2048


@dataclass
class Cursor:
    name: str
    plan: Plan
    params: tuple[str | None, ...] = ()  # the DECLARE's parameters (AS OF $1)
    sub: Subscription | None = None


@dataclass
class Prepared:
    sql: str
    stmt: Statement
    param_types: tuple[int, ...]
    passthrough: bool


@dataclass
class Portal:
    prepared: Prepared
    params: tuple[str | None, ...] = ()
    result_formats: tuple[int, ...] = ()
    passthrough: bool = False
    sub: Subscription | None = None  # a bare SUBSCRIBE being paged with max_rows
    plan: Plan | None = None
    done_tag: str | None = None
    sent: int = 0


@dataclass
class Exec:
    """How one statement runs: simple or extended protocol, parameters, formats."""

    simple: bool
    params: tuple[str | None, ...] = ()
    result_formats: tuple[int, ...] = ()
    max_rows: int = 0
    portal: Portal | None = None


@dataclass
class Vars:
    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values.get(name.lower())

    def set(self, name: str, value: str) -> None:
        self.values[name.lower()] = value


class AlreadyReported(MzError):
    """PostgreSQL's ErrorResponse has been relayed; only the state change remains."""

    def __init__(self) -> None:
        super().__init__("XX000", "relayed")


class Connection:
    """One client connection: state, buffered output, reading and cancellation."""

    def __init__(
        self,
        server: Host,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pid: int,
        secret: int,
    ) -> None:
        self.server = server
        self.engine = server.engine
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.secret = secret
        self.frames = wire.FrameReader()
        self._out: list[bytes] = []
        self._out_size = 0
        self.vars = Vars()
        self.block: str | None = None  # None, "implicit", "explicit"
        self.failed = False
        self.ops: str | None = None  # None, "subscribe", "read"
        self.cursors: dict[str, Cursor] = {}
        self.pg_cursors: set[str] = set()
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.link: PgLink | None = None
        self._link_dirty = False  # extended-protocol messages sent since the last Sync
        self._link_busy = False
        self._ext_failed = False
        self._op: asyncio.Future[Any] | None = None
        # Like PostgreSQL's QueryCancelPending: a cancel that arrives while a statement
        # runs but between two waits still ends that statement at its next wait.
        self._executing = False
        self._cancel_pending = False
        self.user = ""
        self.closed = False

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.writer.write(data)
        await self.writer.drain()

    async def _maybe_flush(self) -> None:
        if self._out_size >= _FLUSH_BYTES:
            await self._flush()

    def _send_error(self, err: MzError) -> None:
        self._send(wire.error_response(err))

    def _send_notice(self, notice: Notice) -> None:
        self._send(wire.notice_response(notice))

    def _status(self) -> str:
        if self.block == "explicit":
            return "E" if self.failed else "T"
        return "I"

    async def _ready(self) -> None:
        self._send(wire.ready_for_query(self._status()))
        await self._flush()

    async def _read_more(self, wait_s: float | None) -> bool:
        """Read from the client into the frame buffer; False on timeout.

        Raises ConnectionResetError at end of input.
        """
        try:
            if wait_s is None:
                data = await self.reader.read(1 << 16)
            else:
                data = await asyncio.wait_for(self.reader.read(1 << 16), max(wait_s, 0.0))
        except TimeoutError:
            return False
        if not data:
            raise ConnectionResetError("client closed the connection")
        self.frames.feed(data)
        return True

    async def _next_message(self, wait_s: float | None) -> tuple[bytes, bytes] | None:
        loop = asyncio.get_running_loop()
        deadline = None if wait_s is None else loop.time() + wait_s
        while True:
            msg = self.frames.next_message()
            if msg is not None:
                return msg
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            if not await self._read_more(remaining):
                return None

    async def _cancellable(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` so that a CancelRequest or the client hanging up interrupts it.

        Raises MzError 57014 when canceled, ConnectionResetError when the client left.
        """
        if self._cancel_pending:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise errors.canceled()
        op: asyncio.Future[T] = asyncio.ensure_future(coro)
        self._op = op
        watch: asyncio.Future[Any] = asyncio.ensure_future(self._watch_input())
        try:
            pending: set[asyncio.Future[Any]] = {op, watch}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if op in done:
                return op.result()
            op.cancel()
            with contextlib.suppress(BaseException):
                await op
            raise ConnectionResetError("client closed the connection")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                op.cancel()
                raise
            raise errors.canceled() from None
        finally:
            self._op = None
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _watch_input(self) -> None:
        # Keep reading while an operation blocks: pipelined messages are buffered,
        # and end of input tells us the client is gone.
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                return
            self.frames.feed(data)

    def _require_cluster(self) -> None:
        cluster = self.vars.get("cluster") or DEFAULT_CLUSTER
        if cluster not in CLUSTERS:
            raise errors.unknown_cluster(cluster)

    def _rows(
        self,
        columns: Sequence[ColumnDesc],
        rows: Sequence[Sequence[bytes | None]],
        tag: str,
        ex: Exec,
    ) -> None:
        formats = normalize_formats(ex.result_formats, len(columns))
        if ex.simple:
            self._send(wire.row_description(columns, formats))
        encoders = [
            binary_encoder(c.type_oid, c.name) if f else None
            for c, f in zip(columns, formats, strict=True)
        ]
        for row in rows:
            cells = wire.encode_cells(
                None if v is None else (enc(v) if enc else v)
                for v, enc in zip(row, encoders, strict=True)
            )
            self._send(wire.data_row(len(columns), cells))
        self._send(wire.command_complete(tag))

    async def _send_rows(
        self, events: Sequence[Event], encode: Callable[[Sequence[Event], bool], bytes]
    ) -> None:
        """Encode and send ``events`` chunk by chunk.

        Writing each chunk as soon as it is encoded lets the client parse one chunk
        while the next is encoded: on two cores the stream runs at the speed of the
        slower side instead of the sum of both.
        """
        for start in range(0, len(events), _CHUNK_EVENTS):
            self._send(encode(events[start : start + _CHUNK_EVENTS], start == 0))
            if self._out_size >= _FLUSH_BYTES:
                await self._flush()
