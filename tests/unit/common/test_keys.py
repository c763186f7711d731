"""Key layout 2: the hash tags put every key of one partition in one slot and every
view-wide key in another, whatever the view and partition count (common.keys); the
migration plan (common.migrate.plan) renames each layout-1 key to a layout-2 one."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from searchsync.common.keys import Keys
from searchsync.common.migrate import plan

views = st.from_regex(r"[a-z_][a-z0-9_]{0,30}", fullmatch=True)
VIEW_WIDE = (
    "checkpoint",
    "dlq",
    "high_water",
    "members",
    "meta",
    "poll_digests",
    "poll_keys",
    "producer_epoch",
    "producer_lease",
    "reconcile",
    "reconcile_lock",
    "resync",
    "resync_confirmed",
    "resync_lock",
    "retired",
)


def slot(name: str) -> int:
    return key_slot(name.encode())


def partition_keys(keys: Keys, n: int) -> list[str]:
    return [
        keys.stream(n),
        keys.lease(n),
        keys.applied(n),
        keys.counts(n),
        keys.attempts(n),
        keys.blocked(n),
        keys.snapshot_floor(n),
    ]


@given(views, st.integers(1, 64))
def test_every_key_of_a_partition_shares_one_slot(view: str, partitions: int) -> None:
    keys = Keys(view, partitions)
    for n in range(partitions):
        assert {slot(name) for name in partition_keys(keys, n)} == {slot(keys.stream(n))}


@given(views)
def test_the_view_wide_keys_share_one_slot(view: str) -> None:
    keys = Keys(view, 4)
    names = [getattr(keys, attribute) for attribute in VIEW_WIDE]
    assert len(set(names)) == len(VIEW_WIDE)
    assert {slot(name) for name in names} == {slot(keys.checkpoint)}


def test_partitions_spread_over_slots() -> None:
    keys = Keys("orders_search_source_mv", 16)
    assert len({slot(keys.stream(n)) for n in range(16)}) == 16


@given(views, st.integers(1, 16))
def test_the_pattern_matches_every_key_of_the_view_and_no_other_views(
    view: str, partitions: int
) -> None:
    # Redis' glob and fnmatchcase agree on * and [...], the only ones the pattern uses
    keys = Keys(view, partitions)
    mine = [getattr(keys, a) for a in VIEW_WIDE]
    mine += [name for n in range(partitions) for name in partition_keys(keys, n)]
    assert all(fnmatch.fnmatchcase(name, keys.pattern) for name in mine)
    other = Keys(view + "x", partitions)
    theirs = [other.checkpoint, other.stream(0), other.lease(0)]
    assert not any(fnmatch.fnmatchcase(name, keys.pattern) for name in theirs)


@given(views, st.integers(1, 16))
def test_the_migration_renames_layout_1_keys_to_distinct_layout_2_keys(
    view: str, partitions: int
) -> None:
    move = plan(view, partitions)
    keys = Keys(view, partitions)
    olds = [old for old, _ in move.renames]
    news = [new for _, new in move.renames]
    assert all(old.startswith(f"searchsync:{view}:") for old in olds)
    assert all("{" in new for new in news) and len(set(news)) == len(news)
    assert set(news).isdisjoint(olds)
    assert set(keys.streams()) <= set(news)
    assert f"searchsync:{view}:lease:p{partitions - 1}" in move.held
    assert f"searchsync:{view}:producer" in move.held
    assert move.applied == tuple(keys.applied(n) for n in range(partitions))
