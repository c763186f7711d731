"""Transaction blocks: BEGIN, COMMIT, ROLLBACK and what an error does to a block.

Blocks: ``None`` (autocommit), ``"implicit"`` (several statements in one simple
Query) or ``"explicit"`` (BEGIN). Ending a block stops its subscriptions, forgets its
cursors and SUBSCRIBE portals, and ends the PostgreSQL link's transaction.
"""

from __future__ import annotations

import logging

from devstack.mzemu import errors, wire
from devstack.mzemu.errors import MzError
from devstack.mzemu.variables import Variables

__all__ = ["Transactions"]

log = logging.getLogger("mzemu.session")


class Transactions(Variables):
    """Transaction blocks and the state an error leaves."""

    async def _on_error(self) -> None:
        if self.block == "explicit":
            self.failed = True
            self._stop_subscriptions()
        elif self.block == "implicit":
            await self._end_block(commit=False)
        else:
            self._stop_subscriptions()

    def _stop_subscriptions(self) -> None:
        for cursor in self.cursors.values():
            if cursor.sub is not None:
                self.engine.stop(cursor.sub)
                cursor.sub = None

    async def _end_block(self, commit: bool) -> None:
        self._stop_subscriptions()
        self.cursors.clear()
        self.pg_cursors.clear()
        for name in [n for n, p in self.portals.items() if p.sub is not None]:
            sub = self.portals[name].sub
            assert sub is not None
            self.engine.stop(sub)
            del self.portals[name]
        self.block = None
        self.failed = False
        self.ops = None
        link = self.link
        if link is not None and link.status in ("T", "E"):
            try:
                await link.run_internal("COMMIT" if commit else "ROLLBACK")
            except MzError as err:
                if commit:
                    raise err
                log.warning("session %d: PostgreSQL ROLLBACK failed: %s", self.pid, err)

    def _begin(self) -> None:
        if self.block == "explicit":
            self._send_notice(errors.transaction_in_progress())
        else:
            self.block = "explicit"
        self._send(wire.command_complete("BEGIN"))

    async def _commit(self) -> None:
        if self.block is None:
            self._send_notice(errors.no_transaction_in_progress())
            self._send(wire.command_complete("COMMIT"))
            return
        was_failed = self.failed
        await self._end_block(commit=not was_failed)
        self._send(wire.command_complete("ROLLBACK" if was_failed else "COMMIT"))

    async def _rollback(self) -> None:
        if self.block is None:
            self._send_notice(errors.no_transaction_in_progress())
        await self._end_block(commit=False)
        self._send(wire.command_complete("ROLLBACK"))
