"""``searchsync status``: the streams' state in words (what XINFO says, per partition).

:func:`gather` does the Redis reads (one pipeline); :func:`build` and
:func:`render` are pure, so the report's arithmetic is unit-tested without Redis.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .buffer import group_info, outstanding_changes
from .keys import Keys
from .partition_state import merge_applied, merge_counts, queue_applied, queue_counts
from .pipelines import execute_pipeline

__all__ = ["PartitionStatus", "Raw", "Status", "build", "gather", "render"]


class PartitionStatus(msgspec.Struct, frozen=True):
    partition: int
    length: int
    lag: int | None  # entries not yet delivered to the group (None: no group yet)
    pending: int  # delivered, not acknowledged
    owner: str | None  # the consumer holding the lease
    applied_ts: int | None  # every change below it is in OpenSearch
    freshness_seconds: float | None  # now - applied_ts
    buffer: int  # changes written, not yet acknowledged
    # why OpenSearch refuses this partition's writes (auth, endpoint, tls), while a
    # consumer keeps retrying them; None when it is not blocked
    blocked: str | None = None
    blocked_seconds: float | None = None


class Status(msgspec.Struct, frozen=True):
    view: str
    group: str
    checkpoint: int | None  # the producer's frontier: every change below it is in Redis
    checkpoint_age_seconds: float | None
    members: list[str]
    dlq_length: int
    buffer: int
    partitions: list[PartitionStatus]


@dataclass(slots=True)
class Raw:
    """What Redis answered, per partition and overall."""

    checkpoint: bytes | None
    members: list[tuple[bytes, float]]
    dlq_length: int
    counts: dict[bytes, bytes]
    applied: dict[bytes, bytes]
    lengths: list[int]
    groups: list[list[dict[str, Any]] | None]  # XINFO GROUPS per partition (None: no stream)
    owners: list[bytes | None]
    blocked: list[bytes | None] | None = None  # blocked:p<N> per partition (JSON)


def _blocked(raw: bytes | None, now_ms: int) -> tuple[str | None, float | None]:
    """The reason and duration of a ``blocked:p<N>`` value (consumer.runner writes it)."""
    if raw is None:
        return None, None
    try:
        state = json.loads(raw)
        reason = f"{state['kind']}: {state['reason']} (consumer {state['consumer']})"
        return reason, (now_ms - int(state["since_ms"])) / 1000
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace"), None


def _int(value: bytes | None) -> int | None:
    return int(value) if value is not None else None


def build(
    raw: Raw, keys: Keys, *, view: str, group: str, now_ms: int, member_ttl_ms: int
) -> Status:
    """The report from Redis' answers at ``now_ms``; members older than the TTL are gone."""
    partitions: list[PartitionStatus] = []
    for n in range(keys.partitions):
        info = group_info(raw.groups[n], group)
        lag = info.get("lag") if info else None
        pending = int(info.get("pending", 0)) if info else 0
        applied = _int(raw.applied.get(Keys.partition_name(n).encode()))
        owner = raw.owners[n]
        blocked, blocked_for = _blocked(raw.blocked[n] if raw.blocked else None, now_ms)
        partitions.append(
            PartitionStatus(
                partition=n,
                length=raw.lengths[n],
                lag=int(lag) if lag is not None else None,
                pending=pending,
                owner=owner.decode() if owner else None,
                applied_ts=applied,
                freshness_seconds=(now_ms - applied) / 1000 if applied is not None else None,
                buffer=outstanding_changes(raw.counts, n, info, raw.lengths[n]),
                blocked=blocked,
                blocked_seconds=blocked_for,
            )
        )
    checkpoint = _int(raw.checkpoint)
    live = [m.decode() for m, beat in raw.members if now_ms - beat <= member_ttl_ms]
    return Status(
        view=view,
        group=group,
        checkpoint=checkpoint,
        checkpoint_age_seconds=(now_ms - checkpoint) / 1000 if checkpoint is not None else None,
        members=sorted(live),
        dlq_length=raw.dlq_length,
        buffer=sum(p.buffer for p in partitions),
        partitions=partitions,
    )


async def gather(redis: Redis, keys: Keys, group: str) -> Raw:
    """Read everything :func:`build` needs in two round trips. Raises redis errors."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.checkpoint)
        pipe.zrange(keys.members, 0, -1, withscores=True)
        pipe.xlen(keys.dlq)
        queue_counts(pipe, keys)
        queue_applied(pipe, keys)
        for n in range(keys.partitions):
            pipe.xlen(keys.stream(n))
            pipe.get(keys.lease(n))
            pipe.get(keys.blocked(n))
        head = await execute_pipeline(pipe)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in keys.streams():
            pipe.xinfo_groups(stream)
        groups = await pipe.execute(raise_on_error=False)
    partitions = keys.partitions
    per = head[3 + 2 * partitions :]
    return Raw(
        checkpoint=head[0],
        members=list(head[1]),
        dlq_length=head[2],
        counts=merge_counts(head[3 : 3 + partitions]),
        applied=merge_applied(head[3 + partitions : 3 + 2 * partitions], keys),
        lengths=[int(x) for x in per[0::3]],
        owners=list(per[1::3]),
        blocked=list(per[2::3]),
        groups=[None if isinstance(g, ResponseError) else g for g in groups],
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def render(status: Status) -> str:
    """The human form: one header line, one row per partition."""
    lines = [
        f"view {status.view}  group {status.group}  "
        f"checkpoint {status.checkpoint if status.checkpoint is not None else '-'} "
        f"({_seconds(status.checkpoint_age_seconds)} ago)  "
        f"consumers {len(status.members)}  buffer {status.buffer} changes  "
        f"dlq {status.dlq_length}",
        f"{'partition':<10}{'length':>9}{'lag':>8}{'pending':>9}  {'owner':<28}"
        f"{'applied_ts':>15}{'freshness':>11}",
    ]
    for p in status.partitions:
        lines.append(
            f"{'p' + str(p.partition):<10}{p.length:>9}{p.lag if p.lag is not None else '-':>8}"
            f"{p.pending:>9}  {(p.owner or '-'):<28}"
            f"{p.applied_ts if p.applied_ts is not None else '-':>15}"
            f"{_seconds(p.freshness_seconds):>11}" + ("  BLOCKED" if p.blocked else "")
        )
    for p in status.partitions:
        if p.blocked:
            lines.append(f"p{p.partition} BLOCKED for {_seconds(p.blocked_seconds)}: {p.blocked}")
    return "\n".join(lines)


def now_ms() -> int:
    return int(time.time() * 1000)
