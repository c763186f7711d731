"""common/status.py: the status report's arithmetic, from Redis-shaped answers."""

from __future__ import annotations

from searchsync.common.keys import Keys
from searchsync.common.status import Raw, build, render

KEYS = Keys("v", 2)
NOW = 1_000_000


def raw(**overrides: object) -> Raw:
    base: dict[str, object] = {
        "checkpoint": b"999000",
        "members": [(b"c1", float(NOW - 1000)), (b"old", float(NOW - 60_000))],
        "dlq_length": 3,
        "counts": {
            b"written:p0": b"500",
            b"acked:p0": b"100",
            b"written:p1": b"7",
            b"acked:p1": b"7",
        },
        "applied": {b"p0": b"998000"},
        "lengths": [40, 7],
        "groups": [
            [{"name": b"g", "lag": 3, "pending": 2}],
            [{"name": b"g", "lag": 0, "pending": 0}],
        ],
        "owners": [b"c1", None],
    }
    base.update(overrides)
    return Raw(**base)  # type: ignore[arg-type]


def test_partition_rows() -> None:
    status = build(raw(), KEYS, view="v", group="g", now_ms=NOW, member_ttl_ms=5000)
    p0, p1 = status.partitions
    assert (p0.length, p0.lag, p0.pending, p0.owner) == (40, 3, 2, "c1")
    assert p0.applied_ts == 998000 and p0.freshness_seconds == 2.0
    assert p0.buffer == 400  # changes written - acked, entries outstanding
    assert (p1.owner, p1.applied_ts, p1.freshness_seconds, p1.buffer) == (None, None, None, 0)
    assert status.buffer == 400
    assert status.members == ["c1"]  # the stale heartbeat is not a member
    assert status.checkpoint_age_seconds == 1.0
    assert status.dlq_length == 3


def test_no_group_yet_counts_the_whole_stream() -> None:
    status = build(
        raw(groups=[None, None]), KEYS, view="v", group="g", now_ms=NOW, member_ttl_ms=5000
    )
    assert status.partitions[0].lag is None
    assert status.partitions[0].buffer == 400
    assert status.partitions[1].buffer == 7


def test_other_groups_are_ignored() -> None:
    groups = [[{"name": "other", "lag": 99, "pending": 9}], None]
    status = build(raw(groups=groups), KEYS, view="v", group="g", now_ms=NOW, member_ttl_ms=1)
    assert status.partitions[0].lag is None and status.partitions[0].pending == 0


def test_render_has_a_row_per_partition() -> None:
    text = render(build(raw(), KEYS, view="v", group="g", now_ms=NOW, member_ttl_ms=5000))
    lines = text.splitlines()
    assert lines[0].startswith("view v  group g  checkpoint 999000 (1.0s ago)")
    assert "dlq 3" in lines[0]
    assert lines[2].split()[:5] == ["p0", "40", "3", "2", "c1"]
    assert lines[3].split()[:5] == ["p1", "7", "0", "0", "-"]
