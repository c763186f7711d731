"""How often each pending entry was really attempted: what MAX_DELIVERIES counts.

Redis' own delivery count grows with every XREADGROUP, XAUTOCLAIM and XCLAIM, so
a rebalance, a restart or a Redis outage longer than the lease add deliveries to
entries that never reached OpenSearch, and valid changes ended in the dlq. The
consumers keep their own count in the hash ``searchsync:{<view>:p<N>}:attempts``,
with one meaning:

    attempts = bulks that carried the entry and failed on it (FAILED outcomes)
             + bulks that carried it and whose runner never came back (it died)

Two kinds of field, readable in ``redis-cli HGETALL``:

* ``<entry id>`` → the count above;
* ``<entry id>@`` → the token of the runner that has a bulk carrying the entry on
  the wire right now (an in-flight marker).

How they are kept, in the round trips the runner makes anyway:

* right before a bulk, atomically with the lease fence (consumer.leases), the
  runner sets the marker of every entry in it (HSET: doing it twice is harmless);
* once the answer is in, in the acknowledging pipeline (:func:`queue_answered`),
  the markers are deleted, the count of an entry whose change FAILED goes up by
  one, and both fields of an acknowledged entry go;
* a runner that takes entries over first runs :meth:`Attempts.recover`: a marker
  with another token means its consumer process died (or lost the partition to
  another consumer) with the bulk on the wire — one attempt, counted now; markers
  with its own token (left by a Redis error between a bulk and its answer's
  pipeline, even one that outlasted the lease) are simply dropped. The token is
  the process's; a runner that failed with an unexpected error takes a new one,
  so its markers count too: an entry that keeps breaking the runner ends in the
  dlq.

So a Redis error, a takeover, a 429, a 401 or OpenSearch being down never use up
an attempt; a consumer killed with its bulk on the wire always does. An entry
whose count reached MAX_DELIVERIES is dead-lettered instead of sent
(consumer.batch).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

__all__ = [
    "MARKER_SUFFIX",
    "Attempts",
    "marker",
    "new_token",
    "prune",
    "queue_answered",
    "read_attempts",
]

MARKER_SUFFIX: Final = b"@"

# KEYS[1] attempts hash; ARGV[1] the runner's token. See Attempts.recover.
_RECOVER = """
local fields = redis.call('HGETALL', KEYS[1])
local counted = 0
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, -1) == '@' then
    if fields[i + 1] ~= ARGV[1] then
      redis.call('HINCRBY', KEYS[1], string.sub(name, 1, -2), 1)
      counted = counted + 1
    end
    redis.call('HDEL', KEYS[1], name)
  end
end
return counted
"""


def marker(entry_id: bytes) -> bytes:
    """The in-flight marker field of ``entry_id``."""
    return entry_id + MARKER_SUFFIX


def new_token(consumer: str) -> str:
    """A marker token: the consumer's name and a random part (a restarted process, even
    under the same CONSUMER_NAME, is another)."""
    return f"{consumer}/{uuid.uuid4().hex[:8]}"


def queue_answered(
    pipe: Pipeline,
    key: str,
    *,
    sent: Iterable[bytes] = (),
    charged: Iterable[bytes] = (),
    acked: Sequence[bytes] = (),
) -> None:
    """Add to ``pipe`` what a bulk's answer means for the attempts hash ``key``: the
    markers of the ``sent`` entries go, ``charged`` ones (a change FAILED) count one
    attempt, and ``acked`` entries are forgotten."""
    done = set(acked)
    markers = [marker(entry_id) for entry_id in dict.fromkeys(sent) if entry_id not in done]
    if markers:
        pipe.hdel(key, *markers)
    for entry_id in dict.fromkeys(charged):
        if entry_id not in done:
            pipe.hincrby(key, entry_id, 1)
    if acked:
        pipe.hdel(key, *acked, *(marker(entry_id) for entry_id in acked))


async def read_attempts(redis: Redis, key: str, entry_ids: Sequence[bytes]) -> list[int]:
    """The attempts of ``entry_ids`` (0 when none). One round trip (HMGET); raises
    redis.exceptions.RedisError on connection trouble."""
    if not entry_ids:
        return []
    values: Any = await redis.hmget(key, list(entry_ids))
    return [max(int(value), 0) if value is not None else 0 for value in values]


class Attempts:
    """The attempts hash operations of one consumer that need a script."""

    def __init__(self, redis: Redis) -> None:
        self._recover = redis.register_script(_RECOVER)

    async def recover(self, key: str, token: str) -> int:
        """Before a takeover: count the in-flight markers other runners left (one attempt
        each) and drop them and this runner's own. Returns how many were counted.

        One round trip; the hash holds only entries that are pending and were sent.
        Raises redis.exceptions.RedisError on connection trouble.
        """
        counted: Any = await self._recover(keys=[key], args=[token])
        return int(counted)


def _id(field: bytes) -> tuple[int, int]:
    ms, _, seq = field.removesuffix(MARKER_SUFFIX).partition(b"-")
    return int(ms), int(seq or 0)


async def prune(redis: Redis, stream: str, group: str, key: str) -> int:
    """Delete the fields of entries no longer pending (acknowledged by hand, or left by a
    connection cut between an XACK and its HDEL). Returns how many were deleted.

    Three round trips at most; raises redis.exceptions.RedisError.
    """
    fields: Any = await redis.hkeys(key)
    if not fields:
        return 0
    summary: Any = await redis.xpending(stream, group)
    oldest = summary.get("min") if summary.get("pending") else None
    floor = _id(oldest) if oldest is not None else None
    stale = [f for f in fields if floor is None or _id(f) < floor]
    if stale:
        await redis.hdel(key, *stale)
    return len(stale)
