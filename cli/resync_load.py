"""The resync's load: the view's snapshot at one timestamp T, written to the new index.

``SUBSCRIBE (SELECT * FROM <view>) WITH (PROGRESS, SNAPSHOT = true) AS OF AT LEAST H``
(producer.subscribe, the producer's own cursor and text loaders) is read until the
first timestamp above the snapshot's: Materialize's first row is a progress row at
the AS OF (T >= H), the snapshot rows all carry T. Each row is encoded by the
producer's own :class:`producer.documents.DocumentEncoder` at version T, so the
document is byte for byte what the live path writes for a change at T, and sent in
``_bulk`` requests (consumer.bulk's body: ``version = T``, ``external_gte``) through
the resync's write alias with ``require_alias=true``. A 409 means a live change
newer than T is already there (dual writes): it wins, as it must.

A key with several rows at T (a key violation: the producer dead-letters those and
keeps the indexed document) gets the live index's document (or its absence) at
version T, so the new index says what the live one says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from opensearchpy import AsyncOpenSearch, TransportError

from ..common.backoff import Backoff
from ..common.config import Settings
from ..common.entries import Change
from ..common.materialize import connect
from ..consumer.bulk import BULK_PARAMS, decode_response, encode_body
from ..consumer.outcomes import Outcome, classify, describe
from ..producer.documents import register_text_loaders
from ..producer.rows import Progress, Rejected, parse_rows
from ..producer.subscribe import Subscription, connection_class

__all__ = ["BULK_DOCUMENTS", "LoadError", "Loaded", "load_snapshot"]

log = logging.getLogger(__name__)

# Documents per _bulk request and requests in flight: 1,000 ~700-byte documents is
# ~0.7 MB, the size the consumers' bench found best on this node; two in flight keep
# the node busy while the next FETCH is read and encoded.
BULK_DOCUMENTS: Final = 1000
IN_FLIGHT: Final = 2
# Throttled or failed items are retried this often before the load gives up.
ATTEMPTS: Final = 8
_REQUEST_SECONDS: Final = 120.0


class LoadError(Exception):
    """The load could not write every row (the message says why); run resync again."""


@dataclass(slots=True)
class Loaded:
    """What a load did. ``newer``: rows a newer live change had already replaced."""

    as_of: int = 0
    rows: int = 0
    written: int = 0
    newer: int = 0
    violations: int = 0
    bad_rows: int = 0
    rejected: int = 0  # rows the new index refused (mapping, parse errors)
    rejected_sample: list[str] = field(default_factory=list)  # "key: reason", the first 20


class _Writer:
    """Bulks of changes through ``index``, IN_FLIGHT at a time, retried until settled."""

    def __init__(self, client: AsyncOpenSearch, index: str, loaded: Loaded) -> None:
        self._client = client
        self._index = index
        self._loaded = loaded
        self._params = {**BULK_PARAMS, "request_timeout": _REQUEST_SECONDS}
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def submit(self, changes: list[Change]) -> None:
        """Send ``changes`` in the background once a slot is free. Raises the first
        failure of an earlier bulk (:class:`LoadError`, TransportError)."""
        if self._failure is not None:
            raise self._failure
        await self._slots.acquire()
        task = asyncio.create_task(self._send(changes))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def drain(self) -> None:
        """Wait for every bulk; raises the first failure."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, changes: list[Change]) -> None:
        backoff = Backoff(0.5, 10.0, 2.0)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._client.bulk(
                    body=encode_body(changes), index=self._index, params=self._params
                )
            except TransportError as error:
                if attempt == ATTEMPTS:
                    raise LoadError(f"_bulk to {self._index} failed: {error}") from None
                await asyncio.sleep(backoff.next_delay())
                continue
            changes = self._settle(changes, decode_response(response, len(changes)))
            if not changes:
                return
            await asyncio.sleep(backoff.next_delay())
        raise LoadError(f"{len(changes)} documents still refused after {ATTEMPTS} attempts")

    def _settle(self, changes: Sequence[Change], results: Sequence[Any]) -> list[Change]:
        """Count what settled; return what must be sent again."""
        again: list[Change] = []
        loaded = self._loaded
        for change, result in zip(changes, results, strict=True):
            outcome = classify(result)
            if outcome is Outcome.APPLIED:
                loaded.written += result.status < 300
                loaded.newer += result.status == 409
            elif outcome is Outcome.REJECTED:
                loaded.rejected += 1
                if len(loaded.rejected_sample) < 20:
                    loaded.rejected_sample.append(f"{change.key.decode()}: {describe(result)}")
            elif outcome is Outcome.LAYOUT:
                raise LoadError(f"{self._index} cannot be written: {describe(result)}")
            else:
                again.append(change)
        return again


async def load_snapshot(
    settings: Settings,
    client: AsyncOpenSearch,
    *,
    write_alias: str,
    live_index: str,
    at_least: int | None,
    progress: Callable[[int], None],
) -> Loaded:
    """Write the view's snapshot ``AS OF AT LEAST at_least`` (None: the latest) through
    ``write_alias``; ``progress(rows)`` after every FETCH.

    Takes as long as the snapshot (each request waits at most 120 s, each FETCH
    as long as Materialize needs). Raises :class:`LoadError` when rows stay
    refused, psycopg.Error from Materialize, opensearchpy.TransportError.
    """
    loaded = Loaded()
    # the producer's connection (text loaders: the same document bytes), named for the resync
    conn = await connect(
        settings, application_name="searchsync-resync", connection_class=connection_class()
    )
    register_text_loaders(conn.adapters)
    writer = _Writer(client, write_alias, loaded)
    try:
        subscription = Subscription(
            conn,
            view=settings.view_name,
            envelope=settings.subscribe_envelope,
            key_column=settings.key_column,
        )
        await subscription.declare(as_of=at_least, snapshot=True, at_least=at_least is not None)
        violations = await _read(subscription, writer, loaded, progress)
        await writer.drain()
        if violations:
            await _copy_live(client, writer, live_index, sorted(violations), loaded.as_of)
            await writer.drain()
        loaded.violations = len(violations)
    finally:
        await writer.close()
        await conn.close()
    return loaded


async def _read(
    subscription: Subscription, writer: _Writer, loaded: Loaded, progress: Callable[[int], None]
) -> set[str]:
    """FETCH until the snapshot is complete; the keys with several rows at T."""
    seen: set[str] = set()
    violations: set[str] = set()
    batch: list[Change] = []
    as_of: int | None = None
    while True:
        rows = await subscription.fetch()
        layout, encoder = subscription.layout, subscription.encoder
        assert layout is not None and encoder is not None
        rejected: list[Rejected] = []
        for event in parse_rows(layout, rows, rejected):
            ts = event[0]
            if as_of is None:
                as_of = loaded.as_of = ts
            if ts > as_of:  # the first timestamp after the snapshot: it is complete
                if batch:
                    await writer.submit(batch)
                return violations
            if isinstance(event, Progress):
                continue
            _, key, tag, values = event
            loaded.rows += 1
            single = tag in (1, "upsert")  # one copy of one row (diffs) or an upsert state
            if key in seen or not single or values is None:
                violations.add(key)
                continue
            seen.add(key)
            batch.append(Change(as_of, key.encode(), encoder.encode(values, as_of)))
            if len(batch) >= BULK_DOCUMENTS:
                await writer.submit(batch)
                batch = []
        loaded.bad_rows += len(rejected)
        progress(loaded.rows)


async def _copy_live(
    client: AsyncOpenSearch, writer: _Writer, live_index: str, keys: list[str], as_of: int
) -> None:
    """What the live index holds for ``keys`` (key violations), at version ``as_of``."""
    encode = msgspec.json.encode
    for start in range(0, len(keys), BULK_DOCUMENTS):
        part = keys[start : start + BULK_DOCUMENTS]
        response = await client.mget(index=live_index, body={"ids": part})
        changes = [
            Change(as_of, doc["_id"].encode(), encode(doc["_source"]) if doc.get("found") else None)
            for doc in response["docs"]
        ]
        await writer.submit(changes)
    log.info("%d keys with several rows at %d: copied from %s", len(keys), as_of, live_index)
