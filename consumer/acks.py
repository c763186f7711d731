"""Acknowledging settled entries of one partition, and moving its applied frontier.

:meth:`Acker.settle` writes a batch's dead letters (XADD dlq) in a round trip of their
own, ended by WAIT when REDIS_WAIT_REPLICAS asks for replicas, and only once they are
written one pipelined round trip, in order: XACK of the entries, HINCRBY of
``counts`` ``acked:p<N>`` by the changes
they held (the producer's backpressure reads it, see common.buffer), the
attempts bookkeeping of the bulk just answered (consumer.attempts), and, for a
batch that ends with a progress entry, XPENDING of what is still pending below
that entry. The frontier a progress entry at id X carries is only true when no
entry below X is pending in the group, under any consumer: a previous owner
paused past its lease may have read entries this runner never saw. So
:meth:`Acker.advance` is a separate step the runner takes once that list is
empty (consumer.runner). The frontier only moves forward: re-delivered old
progress entries (after a takeover) must not pull it back.

A settle that acknowledges a reconcile marker raises the partition's snapshot floor
(``searchsync:{<view>:p<N>}:floor``, ``ZADD GT``: a retry or an old marker read again
cannot lower it) in the letters' round trip, before the XACK's, so the marker is never
acknowledged without it (memory full refuses the ZADD, not the XACK); the next owner
of the partition reads it at its takeover (consumer.batch: changes below it are
superseded by the snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..common.entries import DeadLetter
from ..common.errors import TransientError
from ..common.keys import SNAPSHOT_FLOOR_MEMBER, Keys
from ..common.pipelines import execute_pipeline
from .attempts import queue_answered
from .deadletters import queue_letters
from .reader import below

__all__ = ["Acker", "LetterWaitTimeout"]


class LetterWaitTimeout(TransientError):
    """Fewer replicas than REDIS_WAIT_REPLICAS acknowledged a batch's dead letters in time."""


# KEYS[1] the partition's applied frontier; ARGV[1] frontier. Raise only.
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class Acker:
    """Settles entries of any partition for ``group`` of one view."""

    def __init__(
        self, redis: Redis, keys: Keys, group: str, *, wait: tuple[int, int] | None = None
    ) -> None:
        """``wait`` (replicas, timeout ms: REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS): the
        letters' round trip ends with WAIT on the connection that wrote them."""
        self._redis = redis
        self._keys = keys
        self._group = group
        self._wait = wait
        self._advance = redis.register_script(_ADVANCE)

    async def settle(
        self,
        partition: int,
        entry_ids: Sequence[bytes],
        changes: int,
        letters: Sequence[DeadLetter] = (),
        *,
        sent: Sequence[bytes] = (),
        charged: Sequence[bytes] = (),
        check_below: bytes | None = None,
        check_count: int = 1,
        floor: int | None = None,
    ) -> list[bytes]:
        """Letters and the snapshot ``floor`` (when ``entry_ids`` hold a reconcile
        marker) first, in a round trip of their own, then one pipeline: XACK
        ``entry_ids``, acked counter, attempts, the pending check.

        The letters go first and alone because a pipeline runs every command even after
        one failed: memory full refuses their XADD (deny-oom) but not the XACK, and on a
        Redis Cluster redis-py sends each node's commands at the same time. An entry is
        acknowledged only once its letters are in the DLQ (else it is delivered again).

        ``sent`` are the entries of the bulk just answered, ``charged`` those of them
        a change of which FAILED (consumer.attempts.queue_answered).

        With ``check_below`` (an entry id) returns the ids of up to
        ``check_count`` entries below it that are still pending after the XACK,
        oldest first; otherwise ``[]``. Raises redis.exceptions.RedisError on
        connection trouble; then nothing or part of it happened, and the entries
        are delivered again (at least once).
        """
        if not entry_ids and not letters and not sent and check_below is None:
            return []
        keys = self._keys
        stream = keys.stream(partition)
        if letters or floor is not None:
            await self._write_before_ack(partition, letters, floor)
        async with self._redis.pipeline(transaction=False) as pipe:
            if entry_ids:
                pipe.xack(stream, self._group, *entry_ids)
            if changes:
                pipe.hincrby(keys.counts(partition), keys.acked_field(partition), changes)
            queue_answered(
                pipe, keys.attempts(partition), sent=sent, charged=charged, acked=entry_ids
            )
            if check_below is not None:
                pipe.xpending_range(stream, self._group, "-", below(check_below), check_count)
            results = await execute_pipeline(pipe)
        if check_below is None:
            return []
        return [row["message_id"] for row in results[-1]]

    async def _write_before_ack(
        self, partition: int, letters: Sequence[DeadLetter], floor: int | None
    ) -> None:
        """What must be written before the XACK, in a round trip of its own: the snapshot
        ``floor`` (ZADD GT) and the letters' XADDs, then WAIT when asked for letters: on a
        cluster the letters and the XACK are on different nodes, so only letters on the
        replicas survive a failover of theirs that the XACK survives (the floor shares
        the XACK's node, and a replica applies that node's writes in order). Raises the
        first refused write (ResponseError: memory full refuses ZADD and XADD, not XACK)
        or :class:`LetterWaitTimeout`; each read bounded by the client's socket timeout."""
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            if floor is not None:
                pipe.zadd(keys.snapshot_floor(partition), {SNAPSHOT_FLOOR_MEMBER: floor}, gt=True)
            queue_letters(pipe, keys, letters)
            if letters and self._wait is not None:
                # the node holding the letters: a cluster pipeline sends a node's commands
                # on one connection, in order, and WAIT counts that connection's writes
                where: dict[str, Any] = {}
                if isinstance(self._redis, RedisCluster):
                    where["target_nodes"] = self._redis.get_node_from_key(keys.dlq)
                pipe.execute_command("WAIT", *self._wait, **where)
            replies = await execute_pipeline(pipe)  # raises the first refused write: nothing acked
        if letters and self._wait is not None and int(replies[-1]) < self._wait[0]:
            raise LetterWaitTimeout(
                f"{replies[-1]} of {self._wait[0]} Redis replicas acknowledged the dead "
                f"letters within {self._wait[1]} ms (REDIS_WAIT_REPLICAS, "
                "REDIS_WAIT_TIMEOUT_MS): the entries stay pending"
            )

    async def snapshot_floor(self, partition: int) -> int | None:
        """The partition's snapshot floor (None: no reconcile marker acknowledged yet). One
        round trip; raises redis.exceptions.RedisError on connection trouble."""
        raw: Any = await self._redis.zscore(
            self._keys.snapshot_floor(partition), SNAPSHOT_FLOOR_MEMBER
        )
        return int(raw) if raw is not None else None

    async def advance(self, partition: int, applied_ts: int) -> None:
        """Raise ``partition``'s applied frontier to ``applied_ts`` (never lowers it).

        Only call it once nothing below the progress entry is pending
        (:meth:`settle`'s check). One round trip. Raises
        redis.exceptions.RedisError on connection trouble; the next progress entry
        writes a newer frontier anyway.
        """
        await self._advance(
            keys=[self._keys.applied(partition)],
            args=[applied_ts],
        )
