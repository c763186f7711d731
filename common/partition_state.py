"""Reading every partition's applied frontier and counters as one mapping.

Key layout 2 (common.keys) keeps each partition's ``applied`` frontier (a string)
and ``counts`` (hash ``written:p<N>`` / ``acked:p<N>``) in that partition's hash
slot, so a reader of all partitions sends one command per partition. Queued on a
non-transactional pipeline they are one round trip on one Redis, one per node on a
cluster (redis-py's cluster pipeline groups them). The merged forms are what the
readers had from layout 1's single hashes: applied ``{b"p<N>": frontier}``, counts
``{b"written:p<N>": n, b"acked:p<N>": n}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from .keys import Keys
from .pipelines import execute_pipeline

__all__ = ["merge_applied", "merge_counts", "queue_applied", "queue_counts", "read_applied"]


def queue_applied(pipe: Any, keys: Keys) -> None:
    """Queue a GET of every partition's applied frontier on ``pipe`` (partitions in order)."""
    for partition in range(keys.partitions):
        pipe.get(keys.applied(partition))


def queue_counts(pipe: Any, keys: Keys) -> None:
    """Queue an HGETALL of every partition's counts on ``pipe`` (partitions in order)."""
    for partition in range(keys.partitions):
        pipe.hgetall(keys.counts(partition))


def merge_applied(replies: Sequence[Any], keys: Keys) -> dict[bytes, bytes]:
    """Pure: ``{b"p<N>": frontier}`` from :func:`queue_applied`'s replies (None: none yet)."""
    return {
        keys.partition_name(n).encode(): raw
        for n, raw in enumerate(replies[: keys.partitions])
        if isinstance(raw, bytes)
    }


def merge_counts(replies: Sequence[Any]) -> dict[bytes, bytes]:
    """Pure: one mapping of every partition's counters from :func:`queue_counts`' replies
    (their field names carry the partition). An error reply is raised."""
    merged: dict[bytes, bytes] = {}
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
        merged.update(reply or {})
    return merged


async def read_applied(redis: Redis, keys: Keys) -> dict[bytes, bytes]:
    """Every partition's applied frontier, ``{b"p<N>": frontier}``: one round trip (one
    per node on a cluster). Raises redis.exceptions.RedisError on connection trouble."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_applied(pipe, keys)
        replies = await execute_pipeline(pipe)
    return merge_applied(replies, keys)
