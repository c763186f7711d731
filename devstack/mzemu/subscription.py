"""One running SUBSCRIBE: its queue of output batches and Materialize's delivery rules.

Materialize hands a subscription's output to the client as messages: the initial
progress row at ``as_of``, then one batch of rows per frontier advance, each
followed by a progress message when ``PROGRESS`` is on. Messages wait in a queue
until a FETCH (or the COPY writer) drains them; the message being drained is
tolerated whatever its size, and if what is queued behind it exceeds the budget
(payload plus 1 KiB per message, ``subscribe_max_buffered_bytes``) the
subscription is retired with "SUBSCRIBE fell behind". The snapshot counts as the
message being drained although the AS OF progress row is queued before it: Materialize
sends that row when the subscribe starts and the snapshot once compute has it, and the
FETCH that started the subscribe takes the row in between (a client that keeps up
stays at a zero backlog, whatever the snapshot's size). Errors are queued behind the
rows already produced, so a client sees those rows first.

No I/O here; ``changed`` is an asyncio.Event the engine sets whenever the queue
grows, so a blocked FETCH wakes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from devstack.mzemu.collection import Collection, Update, upsert_envelope
from devstack.mzemu.errors import MzError, subscribe_fell_behind
from devstack.mzemu.output import DATA, PROGRESS, UPSERT, Event, OutputLayout

__all__ = ["MESSAGE_OVERHEAD_BYTES", "SubscribeSpec", "Subscription", "events_for"]

# SUBSCRIBE_MESSAGE_OVERHEAD_BYTES in Materialize's active_compute_sink.rs.
MESSAGE_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class SubscribeSpec:
    """A planned subscription: resolved timestamps and options."""

    as_of: int
    up_to: int | None
    snapshot: bool
    progress: bool


def events_for(
    ts: int, updates: Sequence[Update], upsert_key: tuple[int, ...] | None
) -> list[Event]:
    """Output events for the consolidated updates of one timestamp."""
    if upsert_key is None:
        return [(DATA, ts, u.diff, u.row) for u in updates]
    return [
        (UPSERT, ts, state, key, row) for state, key, row in upsert_envelope(updates, upsert_key)
    ]


class Subscription:
    """Output queue and lifecycle of one SUBSCRIBE (cursor, COPY or streaming)."""

    def __init__(self, layout: OutputLayout, spec: SubscribeSpec, max_buffered_bytes: int):
        self.layout = layout
        self.spec = spec
        self.max_buffered_bytes = max_buffered_bytes
        self.active = False  # False until the frontier passes as_of
        self.done = False  # no more messages will be queued (UP TO reached, retired)
        self.changed = asyncio.Event()
        self._queue: deque[list[Event] | MzError] = deque()
        self._footprints: deque[int] = deque()
        self._total = 0
        self._head_pos = 0

    # -- producer side (the engine)
    def activate(self, collection: Collection) -> None:
        """Queue the opening messages; requires ``collection.upper > as_of``."""
        spec = self.spec
        self.active = True
        if spec.up_to is not None and spec.up_to <= spec.as_of:
            self._finish()
            return
        opening = 0
        if spec.progress:
            self._push([(PROGRESS, spec.as_of)])
            opening = 1
        batch: list[Event] = []
        if spec.snapshot:
            items = collection.snapshot_items(spec.as_of)
            if self.layout.upsert_key is None:
                as_of = spec.as_of
                batch = [(DATA, as_of, n, row) for row, n in items]
            else:
                snapshot = [Update(row, n) for row, n in items]
                batch = events_for(spec.as_of, snapshot, self.layout.upsert_key)
        for ts, updates in collection.updates_between(spec.as_of, collection.upper):
            if spec.up_to is not None and ts >= spec.up_to:
                break
            batch.extend(events_for(ts, updates, self.layout.upsert_key))
        # Materialize queues the AS OF progress row when the subscribe starts and the
        # snapshot when compute delivers it; the FETCH that started the subscribe has
        # taken the row by then, so the snapshot is the message being drained.
        self._after_batch(batch, collection.upper, taken=opening)

    def on_tick(self, ts: int, updates: Sequence[Update], upper: int) -> None:
        """Queue the output of one closed timestamp and the frontier it reached."""
        if self.done or not self.active:
            return
        batch: list[Event] = []
        if updates and (self.spec.up_to is None or ts < self.spec.up_to):
            batch = events_for(ts, updates, self.layout.upsert_key)
        self._after_batch(batch, upper)

    def _after_batch(self, batch: list[Event], upper: int, taken: int = 0) -> None:
        if batch:
            self._push(batch)
        up_to = self.spec.up_to
        if up_to is not None and upper >= up_to:
            # Materialize ends an UP TO subscription without a final progress row.
            self._finish()
        elif self.spec.progress and upper > self.spec.as_of:
            self._push([(PROGRESS, upper)])
        self._check_backlog(taken)

    def retire(self, error: MzError) -> None:
        """End the subscription with ``error``, delivered after what is already queued."""
        if self.done:
            return
        self.done = True
        self._queue.append(error)
        self._footprints.append(MESSAGE_OVERHEAD_BYTES)
        self._total += MESSAGE_OVERHEAD_BYTES
        self.changed.set()

    def _finish(self) -> None:
        self.done = True
        self.changed.set()

    def _push(self, events: list[Event]) -> None:
        size = MESSAGE_OVERHEAD_BYTES + sum(self.layout.event_bytes(ev) for ev in events)
        self._queue.append(events)
        self._footprints.append(size)
        self._total += size
        self.changed.set()

    def backlog_bytes(self, taken: int = 0) -> int:
        """Bytes queued behind the message the client is draining (with ``taken``: once
        the client took that many messages first)."""
        return self._total - sum(itertools.islice(self._footprints, taken + 1))

    def _check_backlog(self, taken: int = 0) -> None:
        backlog = self.backlog_bytes(taken)
        if backlog > self.max_buffered_bytes:
            self.retire(subscribe_fell_behind(backlog, self.max_buffered_bytes))

    # -- consumer side (FETCH / COPY)
    def ready(self) -> bool:
        """True if take() would return rows or raise."""
        return bool(self._queue)

    def finished(self) -> bool:
        """True once nothing is queued and nothing more will be."""
        return self.done and not self._queue

    def take(self, limit: int | None) -> list[Event]:
        """Up to ``limit`` (None: all) queued events, oldest first, without waiting.

        Raises the queued MzError once the rows before it have been taken.
        """
        out: list[Event] = []
        remaining = limit if limit is not None else -1
        queue = self._queue
        while queue and remaining != 0:
            head = queue[0]
            if isinstance(head, MzError):
                if out:
                    return out
                raise head
            available = len(head) - self._head_pos
            n = available if remaining < 0 else min(available, remaining)
            if self._head_pos == 0 and n == available:
                out.extend(head)
            else:
                out.extend(head[self._head_pos : self._head_pos + n])
            self._head_pos += n
            if remaining > 0:
                remaining -= n
            if self._head_pos >= len(head):
                queue.popleft()
                self._total -= self._footprints.popleft()
                self._head_pos = 0
        if not queue and not self.done:
            self.changed.clear()
        return out

    async def wait(self, wait_s: float | None) -> None:
        """Wait until something is queued or the subscription ends (at most ``wait_s`` s)."""
        if self._queue or self.done:
            return
        self.changed.clear()
        if wait_s is None:
            await self.changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), wait_s)
