"""Writing to both indexes while ``searchsync resync`` rebuilds the index (common.resync).

:class:`DualWrite` is what this consumer knows of the resync: the worker calls
:meth:`DualWrite.refresh` every tick (at most 1 s apart; one HGETALL), before it
starts any runner, so a consumer started during a resync dual-writes from its
first bulk. consumer.sender reads :attr:`DualWrite.target` when a bulk starts and,
when set, sends the same body to ``<alias>_resync`` as well (with
``require_alias``; the resync keeps that name pointing at an index, so late writes
land in the live index after a swap or an abort).

The consumer confirms the resync's id in ``resync:confirmed`` once no bulk that
started without the target is still in flight: from then on every bulk it sends
reaches both indexes, which is what the resync waits for before it picks the
snapshot's timestamp.

:func:`merge` decides an item's outcome from both answers (pure): the worse of
the two, so a change the new index could not take is retried like any other
(and dead-lettered when the new index rejects the document itself, with a reason
naming it; the live write has then been applied, and the resync's verify finds
the key missing or different in the new index, so the alias is not moved). An
index-not-found answer of the target (``<alias>_resync`` removed by hand) counts as
applied: it must never stop the consumer the way a broken live alias does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis

from ..common.keys import Keys
from ..common.resync import dual_write_target, parse_record
from .bulk import ItemResult
from .outcomes import Outcome, classify

__all__ = ["DualWrite", "merge"]

log = logging.getLogger(__name__)

# How bad an outcome is for the item: the worse of the two answers decides.
_SEVERITY: Final = {
    Outcome.APPLIED: 0,
    Outcome.REJECTED: 1,
    Outcome.FAILED: 2,
    Outcome.THROTTLED: 3,
    Outcome.BLOCKED: 4,
    Outcome.LAYOUT: 5,
}
_APPLIED: Final = ItemResult(200)


def _as_target(result: ItemResult, target: str) -> ItemResult:
    """The target's answer as the item's: gone = applied; else its reason names it."""
    outcome = classify(result)
    if outcome is Outcome.APPLIED or outcome is Outcome.LAYOUT:
        # LAYOUT on <alias>_resync: removed by hand; the live write decides
        return _APPLIED
    reason = f"new index {target} (resync): {result.reason or result.error_type}"
    return ItemResult(result.status, result.error_type, reason)


def merge(live: Sequence[ItemResult], new: Sequence[ItemResult], target: str) -> list[ItemResult]:
    """Per item, the worse of the live index's and the target's answers. Pure."""
    out: list[ItemResult] = []
    for mine, theirs in zip(live, new, strict=True):
        other = _as_target(theirs, target)
        worse = _SEVERITY[classify(other)] > _SEVERITY[classify(mine)]
        out.append(other if worse else mine)
    return out


class DualWrite:
    """This consumer's view of the resync in progress; one per consumer process."""

    def __init__(self, redis: Redis, keys: Keys, me: str) -> None:
        self._redis = redis
        self._keys = keys
        self._me = me
        #: the alias to dual-write through, None when there is no resync to write for
        self.target: str | None = None
        self._resync_id: str | None = None
        self._confirmed: str | None = None
        #: bulks in flight that started without the target (consumer.sender counts them)
        self.single_in_flight = 0

    async def refresh(self) -> None:
        """Read the resync's record; confirm its id once every bulk in flight dual-writes.

        Raises redis.exceptions.RedisError (the last known state stays).
        """
        raw: Any = await self._redis.hgetall(self._keys.resync)
        found = dual_write_target(parse_record(raw))
        resync_id, target = found if found is not None else (None, None)
        if resync_id != self._resync_id:
            if target is not None:
                log.info("Resync %s: writing every change to %s as well", resync_id, target)
            else:
                log.info("Resync over: writing to the alias only")
        self._resync_id, self.target = resync_id, target
        if resync_id is None or self._confirmed == resync_id or self.single_in_flight:
            return
        await self._redis.hset(self._keys.resync_confirmed, self._me, resync_id)
        self._confirmed = resync_id
        log.info("Resync %s: confirmed that every bulk goes to both indexes", resync_id)
