"""Who is alive and which partitions each live consumer should own.

Pure functions, no I/O: the lease manager (consumer.leases) feeds them the
``members`` sorted set (member = consumer name, score = last heartbeat in ms) and
acts on the answer. Every consumer computes the same assignment from the same
member list, so no coordinator is needed; while views differ for a moment (one
consumer saw a join, another not yet) the leases keep ownership exclusive and the
next tick converges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["assign", "desired_partitions", "live_members", "stale_before"]


def stale_before(now_ms: int, ttl_ms: int) -> int:
    """Heartbeats older than this (ms) belong to consumers presumed dead."""
    return now_ms - ttl_ms


def live_members(heartbeats: Mapping[str, float], now_ms: int, ttl_ms: int) -> list[str]:
    """Members whose last heartbeat is within ``ttl_ms`` of ``now_ms``, sorted by name.

    Sorting by name (not by join time) makes every consumer agree on the order
    whatever order Redis returned the members in.
    """
    cutoff = stale_before(now_ms, ttl_ms)
    return sorted(name for name, beat in heartbeats.items() if beat >= cutoff)


def assign(partitions: int, members: Iterable[str]) -> dict[str, frozenset[int]]:
    """Spread ``partitions`` over ``members``: round robin over the sorted names.

    Deterministic and even: every member gets ``partitions // m`` or one more.
    No members gives an empty mapping.
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    owned: dict[str, set[int]] = {name: set() for name in ordered}
    for partition in range(partitions):
        owned[ordered[partition % len(ordered)]].add(partition)
    return {name: frozenset(parts) for name, parts in owned.items()}


def desired_partitions(partitions: int, members: Iterable[str], me: str) -> frozenset[int]:
    """The partitions ``me`` should hold; ``me`` counts as live even if not listed yet."""
    return assign(partitions, {*members, me}).get(me, frozenset())
