"""Moving a view's Redis keys from key layout 1 to layout 2 (``searchsync migrate-layout``).

Layout 1 named every key ``searchsync:<view>:…`` and kept all partitions' applied
frontiers in one hash (``applied``: field ``p<N>``) and all their counters in another
(``counts``: ``written:p<N>`` / ``acked:p<N>``). Layout 2 (common.keys) puts hash
tags in the names and splits those two hashes per partition. The move is one Lua
script: no other client runs between its steps and all its checks come before its
first write, so a refusal moves nothing; Redis does not roll a script back, so a
write refused part-way (memory full) would leave the move half done. Every key is
RENAMEd (a stream keeps its entries, consumer group, pending list and last-delivered
id; a key keeps its TTL), the two hashes are split, and the meta hash is written
with layout 2 last (from the settings, which must agree with the layout-1 meta if
there is one).

Safe only while nothing of the view runs: the script refuses while the producer
lease, a partition lease, the reconcile lock or the resync lock is held (each
expires within LEASE_TTL_SECONDS of its holder's stop), and when a layout-2 key
already exists (both layouts at once: someone started a new version meanwhile).

A script that names keys of many slots runs only on a Redis that is not a cluster;
layout 1 never ran on one (its scripts span slots), so a cluster has nothing to
migrate. The plan (:func:`plan`) is pure: key names only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from .config import Settings
from .keys import Keys
from .meta import layout_fields, v1_key, v1_prefix

__all__ = ["MIGRATE", "Migration", "MigrationRefused", "migrate", "plan"]

# layout-1 name suffix -> Keys attribute of its layout-2 name (view-wide keys moved as they are)
_VIEW_WIDE: Final = (
    ("checkpoint", "checkpoint"),
    ("dlq", "dlq"),
    ("members", "members"),
    ("reconcile", "reconcile"),
    ("poll:keys", "poll_keys"),
    ("poll:digests", "poll_digests"),
    ("producer:epoch", "producer_epoch"),
    ("high_water", "high_water"),
    ("resync", "resync"),
    ("resync:confirmed", "resync_confirmed"),
    ("retired", "retired"),
)
# layout-1 keys that must not exist: each is held by a running process
_HELD: Final = ("producer", "reconcile:lock", "resync:lock")


class MigrationRefused(Exception):
    """The view cannot be migrated now; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    """The keys of one view's move, in the order the script takes them."""

    old_meta: str
    new_meta: str
    old_applied: str
    old_counts: str
    held: tuple[str, ...]  # must not exist (leases, locks)
    renames: tuple[tuple[str, str], ...]  # (layout 1, layout 2)
    applied: tuple[str, ...]  # layout 2 applied frontier per partition
    counts: tuple[str, ...]  # layout 2 counts per partition

    def script_keys(self) -> list[str]:
        return [
            self.old_meta,
            self.new_meta,
            self.old_applied,
            self.old_counts,
            *self.held,
            *(name for pair in self.renames for name in pair),
            *self.applied,
            *self.counts,
        ]

    def script_args(self, meta: dict[str, str]) -> list[str | int]:
        flat = [item for pair in meta.items() for item in pair]
        return [len(self.held), len(self.renames), len(self.applied), *flat]


def plan(view: str, partitions: int) -> Migration:
    """Pure: every key of ``view`` with ``partitions`` partitions, old and new names."""
    old = v1_prefix(view)
    keys = Keys(view, partitions)
    renames = [(old + suffix, getattr(keys, attribute)) for suffix, attribute in _VIEW_WIDE]
    for n in range(partitions):
        renames.append((f"{old}p{n}", keys.stream(n)))
        renames.append((f"{old}attempts:p{n}", keys.attempts(n)))
        renames.append((f"{old}blocked:p{n}", keys.blocked(n)))
    return Migration(
        old_meta=old + "meta",
        new_meta=keys.meta,
        old_applied=old + "applied",
        old_counts=old + "counts",
        held=(*(old + name for name in _HELD), *(f"{old}lease:p{n}" for n in range(partitions))),
        renames=tuple(renames),
        applied=tuple(keys.applied(n) for n in range(partitions)),
        counts=tuple(keys.counts(n) for n in range(partitions)),
    )


#: KEYS: old meta, new meta, old applied, old counts, held…, (old, new)…, applied…, counts…
#: ARGV: #held, #renames, #partitions, then the layout-2 meta's field, value pairs.
#: Returns {"held", key} or {"both", key} (nothing done), or {"moved", n}: keys moved.
MIGRATE: Final = """
local held, renames, partitions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then return {'both', KEYS[2]} end
local at = 5
for i = at, at + held - 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {'held', KEYS[i]} end
end
at = at + held
local first_new = at + 2 * renames
for i = 0, renames - 1 do
  if redis.call('EXISTS', KEYS[at + 2 * i + 1]) == 1 then return {'both', KEYS[at + 2 * i + 1]} end
end
for p = 0, 2 * partitions - 1 do
  if redis.call('EXISTS', KEYS[first_new + p]) == 1 then return {'both', KEYS[first_new + p]} end
end
local moved = 0
for i = 0, renames - 1 do
  if redis.call('EXISTS', KEYS[at + 2 * i]) == 1 then
    redis.call('RENAME', KEYS[at + 2 * i], KEYS[at + 2 * i + 1])
    moved = moved + 1
  end
end
for p = 0, partitions - 1 do
  local frontier = redis.call('HGET', KEYS[3], 'p' .. p)
  if frontier then redis.call('SET', KEYS[first_new + p], frontier) end
  for _, name in ipairs({'written:p' .. p, 'acked:p' .. p}) do
    local count = redis.call('HGET', KEYS[4], name)
    if count then redis.call('HSET', KEYS[first_new + partitions + p], name, count) end
  end
end
redis.call('DEL', KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  moved = moved + 1
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
return {'moved', tostring(moved)}
"""


async def migrate(redis: Redis, settings: Settings) -> int | None:
    """Move the keys of ``settings``' view to layout 2 in one script; the number of keys
    moved, None when the view has no layout-1 key (nothing to do).

    Raises :class:`MigrationRefused` when a lease or lock is held, layout-2 keys exist
    or the settings disagree with the layout-1 meta (nothing changed),
    redis.exceptions.RedisError on connection trouble (the script ran whole or not at
    all). A few round trips, each bounded by the client's socket timeout.
    """
    view = settings.view_name
    if await v1_key(redis, view) is None:
        return None
    old: Any = await redis.hgetall(v1_prefix(view) + "meta")
    meta = layout_fields(settings)
    for field, variable in (("partitions", "STREAM_PARTITIONS"), ("key_column", "KEY_COLUMN")):
        theirs = old.get(field.encode())
        if theirs is not None and theirs.decode() != meta[field]:
            raise MigrationRefused(
                f"{variable}={meta[field]} but the layout-1 streams of view {view} were "
                f"created with {variable}={theirs.decode()}: set it so and retry"
            )
    move = plan(view, settings.stream_partitions)
    reply: Any = await redis.eval(
        MIGRATE, len(move.script_keys()), *move.script_keys(), *move.script_args(meta)
    )
    state = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    detail = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
    if state == "held":
        raise MigrationRefused(
            f"{detail} is held: a producer, consumer, reconcile or resync of view {view} is "
            "running (or stopped less than LEASE_TTL_SECONDS ago); stop them all and retry"
        )
    if state == "both":
        raise MigrationRefused(
            f"{detail} exists already: view {view} has keys of both layouts (a new version "
            "started before the migration); nothing was moved"
        )
    return int(detail)
