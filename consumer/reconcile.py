"""Deleting what a lost-history snapshot did not contain, once, after it is applied.

When the producer could not resume (Materialize had compacted the history it
needed) it wrote a fresh snapshot at ts T as upserts, an ``r`` entry at T into
every partition, and ``reconcile[T] = "pending"``. Documents deleted in the lost
history are still in the index with versions below T. Once every partition's
applied frontier is above T (all snapshot rows are in), one consumer, holding
``reconcile:lock``, deletes every document with ``sync_version < T`` (in a
resync's new index too, while consumers dual-write: consumer.dualwrite) and marks
``reconcile[T] = "done"``.

The deletes leave their tombstones at T: the documents below T are searched a page
at a time (after a refresh, :data:`PAGE_SIZE` of them; a plain search and ``_bulk``,
the grants the README's role has already) and each page is one ``_bulk`` of deletes
with ``version=T, version_type=external``. A write that arrives late with a version
below T (a producer paused past its lease, a bulk held on the way by a consumer that
lost its lease) is then refused for ``index.gc_deletes`` (the stream retention,
common.index), as the snapshot at T supersedes it. ``_delete_by_query`` would not
do: it deletes with the document's own version, so its tombstone (at that version
+ 1) lets any write between it and T bring the document back, for good. Not
covered: a key with no live document below T at the reconcile (never indexed, or
deleted before it: its tombstone keeps its own version), which a late write below T
still creates (README, Contracts, "Resume").

Re-running it is harmless: a document rewritten at T or later meanwhile answers a
version conflict and is skipped (what ``conflicts=proceed`` did), one deleted already
answers not found and its tombstone is raised to T, so a lock that expires under a
dead consumer, or a crash half way, only costs a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
from opensearchpy import AsyncOpenSearch, TransportError
from redis.asyncio import Redis

from ..common.cancellation import raise_if_cancelled
from ..common.entries import VERSION_FIELD
from ..common.keys import RECONCILE_DONE, RECONCILE_PENDING, Keys
from ..common.owned_keys import RELEASE, RENEW
from ..common.partition_state import read_applied
from .bulk import BULK_PARAMS, ItemResult, decode_response
from .dualwrite import DualWrite

__all__ = ["Reconciler", "delete_body", "due_snapshots", "tally"]

log = logging.getLogger(__name__)

LOCK_TTL_MS: Final = 30_000
LOCK_RENEW_SECONDS: Final = 10.0
# each request (a refresh, a page's search, a page's _bulk of deletes) waits at most this
REQUEST_TIMEOUT_SECONDS: Final = 120.0
PAGE_SIZE: Final = 1000
_DELETED: Final = 200
_NOT_FOUND: Final = 404  # deleted meanwhile: the delete still leaves its tombstone at T
_CONFLICT: Final = 409  # rewritten at T or later meanwhile: keep it


def due_snapshots(
    reconcile: Mapping[bytes, bytes], applied: Mapping[bytes, bytes], partitions: int
) -> list[int]:
    """Pending snapshot timestamps T with every partition applied beyond T, oldest first.

    A partition without an applied frontier yet holds everything back.
    """
    frontiers: list[int] = []
    for partition in range(partitions):
        raw = applied.get(f"p{partition}".encode())
        if raw is None:
            return []
        frontiers.append(int(raw))
    low = min(frontiers, default=0)
    due = [
        int(ts) for ts, state in reconcile.items() if state == RECONCILE_PENDING and low > int(ts)
    ]
    return sorted(due)


def delete_body(documents: Sequence[tuple[str, str]], ts: int) -> bytes:
    """The ``_bulk`` body deleting each (index, id) with ``version=ts,
    version_type=external``. Pure.

    Each delete names the concrete index the search found the document in: an alias
    over several indexes routes a delete to its write index only. ``external`` (not
    ``external_gte``): a snapshot row written at ``ts`` itself is kept.
    """
    tail = b',"version":%d,"version_type":"external"}}\n' % ts
    return b"".join(
        b'{"delete":{"_index":'
        + msgspec.json.encode(index)
        + b',"_id":'
        + msgspec.json.encode(key)
        + tail
        for index, key in documents
    )


def tally(results: Sequence[ItemResult]) -> tuple[int, list[int], ItemResult | None]:
    """A page of deletes: how many removed a document, the positions of those that did
    not (not found: deleted meanwhile; version conflict: rewritten at T or later, or a
    version ≥ T not written by searchsync), and the first item that failed otherwise,
    or None. Pure."""
    deleted, skipped = 0, []
    for position, result in enumerate(results):
        if result.status == _DELETED:
            deleted += 1
        elif result.status in (_NOT_FOUND, _CONFLICT):
            skipped.append(position)
        else:
            return deleted, skipped, result
    return deleted, skipped, None


class Reconciler:
    """Runs due reconciles for one view; any number of consumers may call :meth:`run_due`."""

    def __init__(
        self,
        redis: Redis,
        client: AsyncOpenSearch,
        keys: Keys,
        alias: str,
        me: str,
        *,
        dual: DualWrite | None = None,
    ):
        self._redis = redis
        self._dual = dual
        self._client = client
        self._keys = keys
        self._alias = alias
        self._me = me
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)

    async def run_due(self) -> list[int]:
        """Run every due reconcile this process can lock; return the snapshot ts done.

        Cheap when nothing is pending (one HGETALL; then a GET per partition). Raises RedisError
        opensearchpy.TransportError; the reconcile then stays pending for a retry.
        """
        states: dict[bytes, bytes] = await self._redis.hgetall(self._keys.reconcile)  # type: ignore[assignment]
        if RECONCILE_PENDING not in states.values():
            return []
        applied = await read_applied(self._redis, self._keys)
        done: list[int] = []
        for ts in due_snapshots(states, applied, self._keys.partitions):
            if await self._run_locked(ts):
                done.append(ts)
        return done

    async def _run_locked(self, ts: int) -> bool:
        lock = self._keys.reconcile_lock
        if not await self._redis.set(lock, self._me, nx=True, px=LOCK_TTL_MS):
            return False
        keeper = asyncio.create_task(self._keep_lock())
        try:
            # someone may have finished it between our HGETALL and the lock
            if await self._redis.hget(self._keys.reconcile, str(ts)) != RECONCILE_PENDING:
                return False
            deleted = await self._delete_older_than(ts)
            await self._redis.hset(self._keys.reconcile, str(ts), RECONCILE_DONE)
            log.warning(
                "Reconcile after snapshot at ts=%d: deleted %d documents with %s < %d "
                "(changes lost with Materialize's compacted history)",
                ts,
                deleted,
                VERSION_FIELD,
                ts,
            )
            return True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._release(keys=[lock], args=[self._me])

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_SECONDS)
            await self._renew(keys=[self._keys.reconcile_lock], args=[self._me, LOCK_TTL_MS])
            raise_if_cancelled()  # redis-py may have swallowed it (common.cancellation)

    async def _delete_older_than(self, ts: int) -> int:
        deleted = await self._delete_in(self._alias, ts)
        target = self._dual.target if self._dual is not None else None
        if target is not None:
            # a resync's new index: its snapshot rows older than ts are just as stale
            # (rows written since carry ts or more), and it becomes the live index
            await self._delete_in(target, ts)
        return deleted

    async def _delete_in(self, index: str, ts: int) -> int:
        """Delete what is below ``ts`` in ``index``, leaving tombstones at ``ts``.

        A page at a time: refresh, search the first :data:`PAGE_SIZE` documents below
        ``ts``, one ``_bulk`` deleting them, until a search finds none. Each request
        waits at most :data:`REQUEST_TIMEOUT_SECONDS`. Raises opensearchpy.TransportError
        (also for a delete OpenSearch failed: the reconcile stays pending and a repeat
        finishes it).
        """
        deleted = 0
        # ids a delete at ts cannot remove (a version ≥ ts not written by searchsync, or
        # answered not found / conflict): the next searches skip them, so the loop ends
        kept: set[str] = set()
        while True:
            # a search only sees what a refresh made searchable: without it, documents
            # indexed in the last refresh_interval would survive the reconcile, and a
            # page's deletes would come back in the next page
            await self._client.indices.refresh(
                index=index, params={"request_timeout": REQUEST_TIMEOUT_SECONDS}
            )
            query: dict[str, Any] = {"range": {VERSION_FIELD: {"lt": ts}}}
            if kept:
                query = {"bool": {"filter": query, "must_not": {"ids": {"values": sorted(kept)}}}}
            page: Any = await self._client.search(
                index=index,
                body={"query": query, "size": PAGE_SIZE, "_source": False, "version": True},
                params={"request_timeout": REQUEST_TIMEOUT_SECONDS},
            )
            hits = page["hits"]["hits"]
            if not hits:
                return deleted
            found = [(hit["_index"], hit["_id"]) for hit in hits if int(hit["_version"]) < ts]
            kept.update(hit["_id"] for hit in hits if int(hit["_version"]) >= ts)
            if not found:
                continue
            # to /_bulk, not the alias's: each action names its concrete index
            response: Any = await self._client.bulk(
                body=delete_body(found, ts),
                params={
                    "filter_path": BULK_PARAMS["filter_path"],
                    "request_timeout": REQUEST_TIMEOUT_SECONDS,
                },
            )
            done, skipped, failed = tally(decode_response(response, len(found)))
            deleted += done
            kept.update(found[position][1] for position in skipped)
            if failed is not None:
                raise TransportError(failed.status, failed.error_type, failed.reason)
