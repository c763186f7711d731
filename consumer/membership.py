"""Who is alive and which partitions each live consumer should own.

Pure functions, no I/O: the lease manager (consumer.leases) feeds them the
``members`` sorted set (member = consumer name, score = last heartbeat in ms) and
acts on the answer. Every consumer computes the same assignment from the same
member list, so no coordinator is needed; while views differ for a moment (one
consumer saw a join, another not yet) the leases keep ownership exclusive and the
next tick converges.
"""

from __future__ import annotations

import hashlib
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
    """Spread ``partitions`` over ``members``, evenly and stickily.

    Even: every member gets ``partitions // m`` or one more. Sticky: each partition
    goes to the member ranking it highest (rendezvous hashing) that still has room,
    so a join or a leave moves about ``partitions / m`` partitions instead of
    reshuffling most of them, as round robin over sorted names did (every moved
    partition pauses while its lease changes hands). Deterministic: the same member
    set gives the same answer in every process. No members gives an empty mapping.
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    base, extra = divmod(partitions, len(ordered))
    owned: dict[str, set[int]] = {name: set() for name in ordered}
    for partition in range(partitions):
        for name in sorted(ordered, key=lambda member: _rank(member, partition)):
            size = len(owned[name])
            # room: below the even share, or at it while one of the ``extra`` larger
            # shares is still free; the greedy never runs out (sum of room == partitions)
            if size < base or (size == base and extra > 0):
                if size == base:
                    extra -= 1
                owned[name].add(partition)
                break
    return {name: frozenset(parts) for name, parts in owned.items()}


def _rank(member: str, partition: int) -> tuple[bytes, str]:
    """``member``'s place in ``partition``'s preference order (lowest first); the
    hash is stable across processes (unlike ``hash()``), the name breaks ties."""
    digest = hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()
    return digest, member


def desired_partitions(partitions: int, members: Iterable[str], me: str) -> frozenset[int]:
    """The partitions ``me`` should hold; ``me`` counts as live even if not listed yet."""
    return assign(partitions, {*members, me}).get(me, frozenset())
