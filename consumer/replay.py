"""Re-delivering retained entries to the consumer group (``searchsync replay``).

A replay moves the group's last-delivered-id of a partition back to just before
the first entry to replay (XGROUP SETID). Consumers then read those entries again
with XREADGROUP ``>`` and send them as usual. Pending entries stay pending (SETID
leaves the group's pending list alone); one re-read with ``>`` is handed to the
reader and acknowledged once.

Why it is safe, and what it must not disturb:

* **Documents**: every write carries ``version = ts`` with ``external_gte``; a
  replayed older change of a key that has a newer document is a version conflict,
  which the consumer counts as a success. A delete's tombstone keeps its version
  for ``index.gc_deletes`` (= STREAM_RETENTION_SECONDS), so an older upsert cannot
  resurrect a deleted document. A document removed by hand with a plain DELETE
  also leaves a tombstone (at its version + 1) and a replay cannot bring it back
  until that tombstone expires; documents lost any other way (a restored snapshot,
  a lost shard, a deleted index) come back.
* **The buffer** (``counts``: ``written:p<N>`` − ``acked:p<N>``, common.buffer):
  consumers add the changes of every entry they acknowledge, replayed or not. The
  replay adds the same number to ``written:p<N>`` in the script that moves the
  group back, so the buffer neither goes negative nor hides real backlog
  afterwards. The count follows the consumer's own rule (consumer.batch).
* **The applied frontier** (``applied``): re-delivered old progress entries cannot
  move it back; consumer.acks only ever raises it.
* **Attempts** (consumer.attempts): acknowledged entries have no attempts left in
  the hash; a replayed entry starts at 0 again, as a first read.
* **High-water mark**: replayed entries are below it (the producer raised it
  before writing them), except entries written by hand, which are dead-lettered
  again; the plan counts them (``above_high_water``).

The ``--since`` point is found per partition (:func:`parse_since`): an entry id or
an ISO time is a position (entry ids are Redis millisecond times); a Materialize
ts is found by a binary search on entry ids for the first entry whose ``ts`` is at
least it (entries of a partition are written in ts order): about log2(span in ms)
``XRANGE … COUNT 1`` round trips, ~27 for a day of entries, plus one short XRANGE.

Refusal: when Redis removed entries at or after the point (trimmed by retention or
deleted by hand), a replay would silently skip them: the plan is refused and names
``searchsync resync``. Counting reads every entry to replay once (XRANGE pages).

The Lua script touches the partition's stream and its ``counts``: both carry the
partition's hash tag (common.keys), so the script is atomic on a cluster too.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..common.keys import Keys
from ..common.streams import LUA_LAST_DELIVERED
from .batch import Batch, RawEntry, loose_ts
from .highwater import HIGH_WATER_MEMBER

__all__ = [
    "ApplyError",
    "EntryId",
    "PartitionPlan",
    "Since",
    "SinceError",
    "StreamInfo",
    "apply_plan",
    "count_changes",
    "format_id",
    "id_before",
    "parse_id",
    "parse_since",
    "plan_partition",
    "retention_problem",
]

EntryId = tuple[int, int]

_MAX_SEQ: Final = 2**64 - 1
_PAGE: Final = 500
# integers below this are not millisecond timestamps (2001-09-09): most likely seconds
_MIN_MS: Final = 10**12
_ID = re.compile(r"^(\d+)-(\d+)$")
# how often the move is retried when consumers read on between the count and the move
_APPLY_TRIES: Final = 50


class SinceError(ValueError):
    """``--since`` is neither an entry id, a Materialize ts nor an ISO time with a zone."""


class ApplyError(RuntimeError):
    """The group moved in a way the replay cannot account for (another replay?)."""


class Since(msgspec.Struct, frozen=True):
    """Where a replay starts: ``kind`` is "id", "time" or "ts".

    ``position`` is the entry id to start at for "id" and "time" (a time's
    millisecond, sequence 0); ``ts`` is the Materialize timestamp for "ts".
    """

    kind: str
    text: str
    position: EntryId | None = None
    ts: int | None = None


def parse_since(text: str) -> Since:
    """``1733312345678-0`` (entry id), ``1733312345678`` (Materialize ts, ms) or
    ``2026-12-04T13:00:00Z`` (ISO time with Z or an offset). Raises :class:`SinceError`."""
    value = text.strip()
    match = _ID.fullmatch(value)
    if match:
        return Since("id", value, position=(int(match[1]), int(match[2])))
    if value.isdigit():
        ts = int(value)
        if ts < _MIN_MS:
            raise SinceError(
                f"{value} is not a Materialize timestamp in milliseconds (seconds? add 000)"
            )
        return Since("ts", value, ts=ts)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SinceError(
            f"--since {value!r}: give an entry id (1733312345678-0), a Materialize "
            "timestamp in ms (1733312345678) or an ISO time (2026-12-04T13:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise SinceError(f"--since {value!r}: an ISO time needs a zone (Z or +01:00)")
    ms = int(moment.timestamp() * 1000)
    return Since("time", value, position=(ms, 0))


def parse_id(raw: bytes | str) -> EntryId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def id_before(entry_id: EntryId) -> EntryId:
    """The greatest id below ``entry_id``: what SETID needs so ``>`` hands out ``entry_id``."""
    ms, seq = entry_id
    if seq > 0:
        return ms, seq - 1
    if ms == 0:
        raise ValueError("0-0 has no predecessor")
    return ms - 1, _MAX_SEQ


class StreamInfo(msgspec.Struct, frozen=True):
    """What XINFO STREAM says about retention (ids None when the stream is empty)."""

    length: int
    last_generated: EntryId
    first_id: EntryId | None
    last_id: EntryId | None
    entries_added: int
    max_deleted: EntryId


def retention_problem(info: StreamInfo, start: EntryId) -> str | None:
    """Why entries at or after ``start`` may be gone, or None when all of them are kept.

    Trimming (STREAM_RETENTION_SECONDS) removes the oldest entries, so every trimmed
    entry lies below the first retained one: when anything was ever removed and
    ``start`` is below the first retained entry, entries between them may have been
    trimmed. XDEL by hand leaves ``max-deleted-entry-id``: at or after ``start``, a
    replay would skip what was deleted.
    """
    removed = info.entries_added - info.length
    if removed <= 0:
        return None
    if info.first_id is None or start < info.first_id:
        kept = format_id(info.first_id) if info.first_id else "nothing"
        return (
            f"{removed} entries were removed by retention; the oldest kept is {kept}, "
            f"after the requested start {format_id(start)}"
        )
    if info.max_deleted >= start:
        return (
            f"entries after the requested start were deleted by hand (XDEL), the latest "
            f"{format_id(info.max_deleted)}"
        )
    return None


def count_changes(entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Changes the consumers will add to ``acked:p<N>`` when they acknowledge ``entries``
    again: the consumer's own count (consumer.batch: ``n`` of a ``b`` entry, one for
    ``u``/``d``, none for markers, a best guess for malformed ones)."""
    batch = Batch(0, max_deliveries=2**31, started=0.0)
    for entry_id, fields in entries:
        batch.add(RawEntry(entry_id, fields, 0))
    return batch.changes


@dataclass(slots=True)
class PartitionPlan:
    """One partition's replay: entries ``first``..``through`` (the group's last-delivered
    id when counted) go back to the group. ``first`` None: nothing to replay."""

    partition: int
    first: EntryId | None = None
    through: EntryId | None = None
    entries: int = 0
    changes: int = 0
    above_high_water: int = 0
    refused: str | None = None
    # entries counted after the plan (consumers read on before the move)
    late_entries: int = 0

    @property
    def setid(self) -> EntryId | None:
        return id_before(self.first) if self.first is not None else None


async def stream_info(redis: Redis, stream: str) -> StreamInfo | None:
    """XINFO STREAM (None when the stream does not exist). Raises redis errors."""
    try:
        raw: Any = await redis.xinfo_stream(stream)
    except ResponseError:
        return None
    first = raw.get("first-entry")
    last = raw.get("last-entry")
    return StreamInfo(
        length=int(raw["length"]),
        last_generated=parse_id(raw["last-generated-id"]),
        first_id=parse_id(first[0]) if first else None,
        last_id=parse_id(last[0]) if last else None,
        entries_added=int(raw.get("entries-added", raw["length"])),
        max_deleted=parse_id(raw.get("max-deleted-entry-id", b"0-0")),
    )


async def last_delivered(redis: Redis, stream: str, group: str) -> EntryId | None:
    """The group's last-delivered-id on ``stream`` (None: no such group). Raises redis errors."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return parse_id(info["last-delivered-id"])
    return None


async def _first_at(redis: Redis, stream: str, start: EntryId) -> tuple[EntryId, int] | None:
    rows: Any = await redis.xrange(stream, min=format_id(start), count=1)
    if not rows:
        return None
    return parse_id(rows[0][0]), loose_ts(rows[0][1])


async def find_ts(redis: Redis, stream: str, ts: int, info: StreamInfo) -> EntryId | None:
    """The first entry of ``stream`` whose ts is at least ``ts`` (None: no such entry).

    Binary search over entry-id milliseconds (entries are written in ts order), then
    one XRANGE through the millisecond before. Cost: log2(span ms) + 1 round trips.
    Raises redis errors.
    """
    if info.first_id is None or info.last_id is None:
        return None
    low, high = info.first_id[0], info.last_id[0] + 1  # answer ms lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        found = await _first_at(redis, stream, (middle, 0))
        if found is None or found[1] >= ts:
            high = middle
        else:
            low = middle + 1
    # every entry at ms >= low starts at ts >= ts; entries of ms low-1 may too
    rows: Any = await redis.xrange(stream, min=format_id((max(low - 1, 0), 0)), count=_PAGE)
    for entry_id, fields in rows:
        if loose_ts(fields) >= ts:
            return parse_id(entry_id)
    found = await _first_at(redis, stream, (low, 0))  # more than a page in one ms
    return found[0] if found is not None else None


async def _high_water(redis: Redis, keys: Keys) -> int | None:
    raw: Any = await redis.zscore(keys.high_water, HIGH_WATER_MEMBER)
    return int(raw) if raw is not None else None


async def count_range(
    redis: Redis,
    stream: str,
    start: str,
    through: EntryId,
    *,
    high_water: int | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """Entries, changes and entries above ``high_water`` from ``start`` (an XRANGE bound:
    ``<id>`` inclusive, ``(<id>`` exclusive) through ``through``, read in XRANGE pages
    of 500. Raises redis errors."""
    entries = changes = above = 0
    cursor = start
    while True:
        rows: Any = await redis.xrange(stream, min=cursor, max=format_id(through), count=_PAGE)
        if not rows:
            return entries, changes, above
        entries += len(rows)
        changes += count_changes(rows)
        if high_water is not None:
            above += sum(1 for _, fields in rows if loose_ts(fields) > high_water)
        if progress is not None:
            progress(entries)
        cursor = "(" + rows[-1][0].decode()
        if len(rows) < _PAGE:
            return entries, changes, above


async def _start_of(
    redis: Redis, stream: str, since: Since, info: StreamInfo
) -> tuple[EntryId, EntryId] | None:
    """Where to start on ``stream`` and the id retention must have kept (None: nothing
    at or after ``since``)."""
    if since.position is not None:
        start: EntryId | None = since.position
        check = since.position
    else:
        assert since.ts is not None
        start = await find_ts(redis, stream, since.ts, info)
        if start is None and info.entries_added > info.length and info.length == 0:
            start = (0, 0)  # everything was removed: the point may have been among it
        if start is None:
            return None
        # the first retained entry qualifies: so may trimmed entries just before it
        check = id_before(start) if start == info.first_id else start
    if start is None or start > info.last_generated:
        return None
    return start, check


async def plan_partition(
    redis: Redis,
    keys: Keys,
    group: str,
    partition: int,
    since: Since,
    *,
    progress: Callable[[int], None] | None = None,
) -> PartitionPlan:
    """What replaying ``partition`` from ``since`` would re-deliver; changes nothing.

    Round trips: 2 XINFO, the ts search (``since`` a Materialize ts), one XRANGE
    per 500 entries to replay. Raises redis errors.
    """
    plan = PartitionPlan(partition)
    stream = keys.stream(partition)
    info = await stream_info(redis, stream)
    delivered = await last_delivered(redis, stream, group)
    if info is None or delivered is None:
        return plan
    point = await _start_of(redis, stream, since, info)
    if point is None:
        return plan
    start, check = point
    plan.refused = retention_problem(info, check)
    if plan.refused is not None:
        return plan
    found = await _first_at(redis, stream, start)
    if found is None or found[0] > delivered:
        return plan  # nothing delivered from there on: consumers will read it anyway
    plan.first, plan.through = found[0], delivered
    plan.entries, plan.changes, plan.above_high_water = await count_range(
        redis, stream, format_id(found[0]), delivered, high_water=await _high_water(redis, keys),
        progress=progress,
    )  # fmt: skip
    return plan


# KEYS[1] stream, KEYS[2] its counts; ARGV: group, expected last-delivered-id, new id,
# written field, changes. Moves the group back only if nobody read on since the count.
_MOVE = (
    LUA_LAST_DELIVERED
    + """
local last = last_delivered(redis.call('XINFO', 'GROUPS', KEYS[1]), ARGV[1])
if not last then return {-1, ''} end
if last ~= ARGV[2] then return {0, last} end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[4], ARGV[5])
return {1, last}
"""
)


async def apply_plan(redis: Redis, keys: Keys, group: str, plan: PartitionPlan) -> PartitionPlan:
    """Move the group of ``plan.partition`` back to ``plan.setid`` and count the replayed
    changes into ``written:p<N>``, atomically (one script).

    Consumers keep reading meanwhile: when the group moved on since the count, the
    entries read since are counted too (one XRANGE) and the move is tried again,
    up to 50 times. Returns the plan as applied. Raises :class:`ApplyError` when the
    group is gone or went backwards (another replay), redis errors otherwise.
    """
    if plan.first is None or plan.through is None or plan.refused is not None:
        return plan
    stream = keys.stream(partition := plan.partition)
    move = redis.register_script(_MOVE)
    high_water = await _high_water(redis, keys)
    for _ in range(_APPLY_TRIES):
        args: list[str | int] = [
            group, format_id(plan.through), format_id(id_before(plan.first)),
            keys.written_field(partition), plan.changes,
        ]  # fmt: skip
        reply: Any = await move(keys=[stream, keys.counts(partition)], args=args)
        state, current = int(reply[0]), reply[1]
        if state == 1:
            return plan
        if state == -1:
            raise ApplyError(f"the group {group} of p{partition} disappeared")
        now = parse_id(current)
        if now < plan.through:
            raise ApplyError(f"the group of p{partition} moved back meanwhile (another replay?)")
        entries, changes, above = await count_range(
            redis, stream, "(" + format_id(plan.through), now, high_water=high_water
        )
        plan.entries += entries
        plan.late_entries += entries
        plan.changes += changes
        plan.above_high_water += above
        plan.through = now
    raise ApplyError(f"consumers of p{partition} kept reading on; try again")
