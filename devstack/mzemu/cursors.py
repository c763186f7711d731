"""DECLARE … CURSOR FOR SUBSCRIBE, FETCH (with and without timeout) and CLOSE.

A cursor's subscription starts at its first FETCH. FETCH without a timeout waits
for the first rows and takes only what is there; with one it collects until the
count or the deadline (Materialize's FETCH).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from devstack.mzemu import errors, wire
from devstack.mzemu.connection import Cursor, Exec
from devstack.mzemu.engine import Plan
from devstack.mzemu.errors import MzError
from devstack.mzemu.output import Event, OutputLayout, normalize_formats
from devstack.mzemu.passthrough import PassThroughRelay
from devstack.mzemu.statements import Close, Declare, Fetch, PassThrough
from devstack.mzemu.subscription import Subscription

__all__ = ["Cursors", "gather", "row_encoder"]


class Cursors(PassThroughRelay):
    """SUBSCRIBE cursors: DECLARE, FETCH, CLOSE."""

    async def _declare(self, stmt: Declare, params: tuple[str | None, ...]) -> None:
        assert stmt.subscribe is not None
        if self.block is None:
            raise errors.declare_outside_transaction()
        if stmt.name in self.cursors or stmt.name in self.pg_cursors:
            raise errors.duplicate_cursor(stmt.name)
        if self.ops == "read":
            raise errors.read_only_transaction()
        if self.ops == "subscribe":
            raise errors.subscribe_only_transaction()
        self._require_cluster()
        plan = await self.engine.plan(stmt.subscribe)
        self.cursors[stmt.name] = Cursor(stmt.name, plan, params)
        self.ops = "subscribe"
        self._send(wire.command_complete("DECLARE CURSOR"))

    def _start(self, plan: Plan, params: tuple[str | None, ...]) -> Subscription:
        sub, notices = self.engine.subscribe(plan, params)
        for notice in notices:
            self._send_notice(notice)
        return sub

    async def _fetch(self, cursor: Cursor, stmt: Fetch, ex: Exec) -> None:
        layout = cursor.plan.layout
        formats = normalize_formats(ex.result_formats, layout.ncols)
        layout.check_formats(formats)
        if ex.max_rows and (stmt.count is None or ex.max_rows < stmt.count):
            what = "of a FETCH ALL" if stmt.count is None else "< a FETCH's count"
            raise MzError("0A000", f"Execute with max_rows {what} is not supported")
        if cursor.sub is None:
            self._require_cluster()
            cursor.sub = self._start(cursor.plan, cursor.params)
        sub = cursor.sub
        if ex.simple:
            self._send(wire.row_description(layout.columns, formats))
        events = await self._cancellable(gather(sub, stmt.count, stmt.timeout_ms))
        await self._send_rows(events, row_encoder(layout, formats))
        self._send(wire.command_complete(f"FETCH {len(events)}"))

    async def _close_cursor(self, stmt: Close, sql: str) -> None:
        names = list(self.cursors) if stmt.name is None else [stmt.name]
        for name in names:
            cursor = self.cursors.pop(name)
            if cursor.sub is not None:
                self.engine.stop(cursor.sub)
        if stmt.name is None and self.pg_cursors and self.link is not None:
            await self._passthrough(PassThrough(sql), sql)
            self.pg_cursors.clear()
            return
        self._send(wire.command_complete("CLOSE CURSOR"))


async def gather(sub: Subscription, count: int | None, timeout_ms: float | None) -> list[Event]:
    """Materialize's FETCH: rows up to ``count`` (None: all).

    Without a timeout it waits for the first rows and then takes only what is
    already there; with one it collects until the count or the deadline.
    Raises the subscription's MzError when reached.
    """
    out: list[Event] = []
    if count == 0:
        return out
    loop = asyncio.get_running_loop()
    deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000
    wait_once = timeout_ms is None
    while True:
        got = sub.take(None if count is None else count - len(out))
        if got:
            out.extend(got)
            if count is not None and len(out) >= count:
                return out
            if wait_once:
                deadline = loop.time()
            continue
        if sub.finished():
            return out
        if deadline is None:
            await sub.wait(None)
        else:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            await sub.wait(remaining)


def row_encoder(
    layout: OutputLayout, formats: tuple[int, ...]
) -> Callable[[Sequence[Event], bool], bytes]:
    def encode(chunk: Sequence[Event], _first: bool) -> bytes:
        return layout.data_rows(chunk, formats)

    return encode
