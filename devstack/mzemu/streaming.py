"""A SUBSCRIBE streamed straight to the client: bare, or as COPY (SUBSCRIBE …) TO STDOUT.

A bare SUBSCRIBE in the extended protocol may be paged with Execute's ``max_rows``
(PortalSuspended between pages); COPY sends text or binary CopyData until the
subscription ends or the statement is canceled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from devstack.mzemu import errors, wire
from devstack.mzemu.connection import Exec
from devstack.mzemu.cursors import Cursors, gather, row_encoder
from devstack.mzemu.errors import Notice
from devstack.mzemu.output import Event, OutputLayout, normalize_formats
from devstack.mzemu.statements import CopySubscribe, Subscribe
from devstack.mzemu.values import BINARY_COPY_HEADER, BINARY_COPY_TRAILER

__all__ = ["Streaming"]


class Streaming(Cursors):
    """Bare SUBSCRIBE and COPY (SUBSCRIBE) TO STDOUT."""

    async def _stream_subscribe(self, stmt: Subscribe, ex: Exec) -> None:
        portal = ex.portal
        if self.ops == "read":
            raise errors.read_only_transaction()
        self._require_cluster()
        plan = (
            portal.plan
            if portal is not None and portal.plan is not None
            else await self.engine.plan(stmt)
        )
        layout = plan.layout
        formats = normalize_formats(ex.result_formats, layout.ncols)
        layout.check_formats(formats)
        if portal is None or portal.sub is None:
            notice = Notice(
                "01000",
                "streaming SUBSCRIBE rows directly requires a client that does not buffer output",
                hint="Wrap your SUBSCRIBE statement in `COPY (SUBSCRIBE ...) TO STDOUT`."
                if self.vars.get("application_name") == "psql"
                else None,
            )
            self._send_notice(notice)
            if ex.simple:
                self._send(wire.row_description(layout.columns, formats))
            sub = self._start(plan, ex.params)
            if portal is not None:
                portal.sub = sub
                portal.plan = plan
            if self.block is not None:
                self.ops = "subscribe"
        else:
            sub = portal.sub
        await self._flush()
        limit = ex.max_rows if ex.max_rows > 0 else None
        sent = 0
        try:
            while limit is None or sent < limit:
                want = None if limit is None else limit - sent
                events = await self._cancellable(gather(sub, want, None))
                if not events and sub.finished():
                    break
                await self._send_rows(events, row_encoder(layout, formats))
                await self._cancellable(self._flush())
                sent += len(events)
        except BaseException:
            self.engine.stop(sub)
            if portal is not None:
                portal.sub = None
            raise
        if portal is not None:
            portal.sent += sent
        if limit is not None and sent >= limit and not sub.finished():
            self._send(wire.portal_suspended())
            return
        self.engine.stop(sub)
        total = portal.sent if portal is not None else sent
        if portal is not None:
            portal.sub = None
            portal.done_tag = f"SELECT {total}"
        self._send(wire.command_complete(f"SELECT {total}"))

    async def _copy_subscribe(self, stmt: CopySubscribe) -> None:
        if self.ops == "read":
            raise errors.read_only_transaction()
        self._require_cluster()
        plan = await self.engine.plan(stmt.subscribe)
        layout = plan.layout
        if stmt.binary:
            layout.check_formats((1,) * layout.ncols)
        sub = self._start(plan, ())
        if self.block is not None:
            self.ops = "subscribe"
        self._send(wire.copy_out_response(stmt.binary, layout.ncols))
        await self._flush()
        header_pending = stmt.binary
        count = 0
        try:
            while True:
                events = await self._cancellable(gather(sub, None, None))
                if events:
                    encode = _copy_encoder(layout, stmt.binary, header_pending)
                    await self._send_rows(events, encode)
                    header_pending = False
                    count += len(events)
                    await self._cancellable(self._flush())
                if sub.finished():
                    break
        finally:
            self.engine.stop(sub)
        if stmt.binary:
            trailer = (
                BINARY_COPY_HEADER + BINARY_COPY_TRAILER if header_pending else BINARY_COPY_TRAILER
            )
            self._send(wire.copy_data(trailer))
        self._send(wire.copy_done())
        self._send(wire.command_complete(f"COPY {count}"))


def _copy_encoder(
    layout: OutputLayout, binary: bool, header: bool
) -> Callable[[Sequence[Event], bool], bytes]:
    def encode(chunk: Sequence[Event], first: bool) -> bytes:
        return layout.copy_messages(chunk, binary, header and first)

    return encode
