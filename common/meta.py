"""The stream layout, fixed when the streams are created: ``searchsync:{<view>}:meta``.

Entries are partitioned by ``crc32(key) % STREAM_PARTITIONS``, so the partition
count is part of the data: a producer started with another count writes a key's
changes to another stream than before, and consumers started with another count
never read the old streams' pending entries (they are orphaned, silently). The
key column decides what a document's ``_id`` is. So the first process to start
records them in a hash, and every producer and consumer compares its settings
with it and refuses to start on a mismatch (exit 2, naming the variable).

=============  ==================================================
field          value
=============  ==================================================
``layout``     :data:`LAYOUT_VERSION` (how keys are named: common.keys)
``partitions`` STREAM_PARTITIONS
``view``       VIEW_NAME (also in the key's name; kept for readers)
``key_column`` KEY_COLUMN
=============  ==================================================

Streams created before this hash existed get it from the first process that
starts, after a check that no stream above its partition count exists.

Key layout 1 (``searchsync:<view>:…``, no hash tags; before Redis Cluster support)
is refused: a process that finds no layout-2 meta but a layout-1 key of its view
(its ``meta``, ``checkpoint`` or partition 0's stream) stops with one line naming
``searchsync migrate-layout`` (common.migrate), instead of starting a second, empty
set of streams beside the old ones and re-reading the view from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from redis.asyncio import Redis

from .config import Settings
from .errors import FatalError
from .keys import Keys

__all__ = [
    "LAYOUT_VERSION",
    "StreamLayoutError",
    "ensure_meta",
    "layout_fields",
    "mismatch",
    "old_layout_error",
    "v1_key",
    "v1_prefix",
]

LAYOUT_VERSION: Final = 2

# KEYS[1] meta; ARGV: field, value, field, value … Written only if the hash is missing,
# so two processes starting at once agree on one layout.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0
"""


class StreamLayoutError(FatalError):
    """The settings disagree with the layout the streams were created with."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


def layout_fields(settings: Settings) -> dict[str, str]:
    """The meta hash this process would write."""
    return {
        "layout": str(LAYOUT_VERSION),
        "partitions": str(settings.stream_partitions),
        "view": settings.view_name,
        "key_column": settings.key_column,
    }


def mismatch(
    stored: Mapping[bytes, bytes], settings: Settings, key: str
) -> StreamLayoutError | None:
    """The first disagreement between ``stored`` (the meta hash) and ``settings``, or None."""
    fields = {name.decode(): value.decode() for name, value in stored.items()}
    layout = fields.get("layout")
    if layout != str(LAYOUT_VERSION):
        return StreamLayoutError(
            "STREAM_PARTITIONS",
            f"the streams of view {settings.view_name} use key layout {layout!r} ({key}); "
            f"this searchsync writes layout {LAYOUT_VERSION}: run a matching version",
        )
    checks = (
        ("STREAM_PARTITIONS", "partitions", str(settings.stream_partitions)),
        ("KEY_COLUMN", "key_column", settings.key_column),
    )
    for variable, name, mine in checks:
        theirs = fields.get(name)
        if theirs != mine:
            return StreamLayoutError(
                variable,
                f"{variable}={mine} but the streams of view {settings.view_name} were "
                f"created with {variable}={theirs} ({key}). Changing it would orphan "
                f"entries already written; set {variable}={theirs}, or start a new view's "
                "streams after draining these (README: changing the partition count)",
            )
    return None


def v1_prefix(view: str) -> str:
    """The prefix of every key of ``view`` in key layout 1: ``searchsync:<view>:``."""
    return f"searchsync:{view}:"


def old_layout_error(view: str, found: str) -> StreamLayoutError:
    """The refusal for a view whose keys are still in layout 1 (``found`` is one of them)."""
    return StreamLayoutError(
        "VIEW_NAME",
        f"view {view} has Redis keys of key layout 1 ({found}); this searchsync uses key "
        f"layout {LAYOUT_VERSION} (hash tags, for Redis Cluster): stop the view's producer "
        "and consumers, then run `searchsync migrate-layout` (README: key layout)",
    )


async def v1_key(redis: Redis, view: str) -> str | None:
    """A layout-1 key of ``view`` that exists, or None: its meta, checkpoint or the first
    partition's stream, one EXISTS each (single-key commands: fine on a cluster)."""
    prefix = v1_prefix(view)
    for name in (prefix + "meta", prefix + "checkpoint", prefix + "p0"):
        if await redis.exists(name):
            return name
    return None


async def _existing_partitions(redis: Redis, keys: Keys) -> int:
    """1 + the highest partition number that has a stream, 0 if none (a SCAN; at start only)."""
    highest = -1
    head = keys.stream(0).removesuffix("0}")  # searchsync:{<view>:p
    async for name in redis.scan_iter(match=head + "*", count=1000, _type="stream"):
        text = name.decode() if isinstance(name, bytes) else str(name)
        suffix = text.removeprefix(head).removesuffix("}")
        if suffix.isdigit():
            highest = max(highest, int(suffix))
    return highest + 1


async def ensure_meta(redis: Redis, keys: Keys, settings: Settings) -> None:
    """Record the layout if the streams have none; raise if ``settings`` disagree with it.

    Raises :class:`StreamLayoutError` (exit 2 in the entry points), also when the view's
    keys are still in key layout 1 (:func:`old_layout_error`),
    redis.exceptions.RedisError on connection trouble.
    """
    stored: Any = await redis.hgetall(keys.meta)
    if not stored:
        old = await v1_key(redis, settings.view_name)
        if old is not None:
            raise old_layout_error(settings.view_name, old)
        existing = await _existing_partitions(redis, keys)
        # a stream above the configured count was written with more partitions: its
        # entries would never be read (fewer streams than configured can be streams no
        # change reached yet)
        if existing > settings.stream_partitions:
            raise StreamLayoutError(
                "STREAM_PARTITIONS",
                f"STREAM_PARTITIONS={settings.stream_partitions} but view "
                f"{settings.view_name} already has a stream p{existing - 1}: the streams "
                f"were written with STREAM_PARTITIONS={existing} or more",
            )
        flat = [item for pair in layout_fields(settings).items() for item in pair]
        await redis.eval(_CREATE, 1, keys.meta, *flat)
        stored = await redis.hgetall(keys.meta)
    problem = mismatch(stored, settings, keys.meta)
    if problem is not None:
        raise problem
