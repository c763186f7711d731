"""The failover loss account (tests/cluster/losses.py): lost, acknowledged, kept in
another copy, recovered by the replay, progress entries apart."""

from __future__ import annotations

from searchsync.common.entries import encode_changes, encode_progress
from tests.cluster.losses import StreamEntry, account_failover, entry_id

S = "searchsync:{v:p0}"


def upsert(entry: str, ts: int, key: bytes) -> StreamEntry:
    return entry.encode(), encode_changes(ts, [(key, b'{"k":"' + key + b'"}')])


def test_ids_order_as_redis_orders_them() -> None:
    assert entry_id(b"1700000000000-10") > entry_id(b"1700000000000-9")
    assert entry_id(b"1700000000001-0") > entry_id(b"1700000000000-99")


def test_nothing_lost_when_the_promoted_node_has_every_entry() -> None:
    master = [upsert("1-0", 10, b"a"), (b"2-0", encode_progress(11))]
    loss = account_failover({S: master}, {S: [*master, upsert("9-0", 12, b"b")]}, 11)
    assert (loss.read_entries, loss.lost_entries, loss.lost_changes) == (2, {}, 0)
    assert loss.unknown_on_promoted == 0


def test_lost_entries_above_the_checkpoint_replayed_are_recovered() -> None:
    batch = (b"3-0", encode_changes(12, [(b"b", b"{}"), (b"c", None)]))
    master = [upsert("1-0", 10, b"a"), (b"2-0", encode_progress(11)), batch]
    promoted = [master[0], (b"7-0", batch[1])]  # the progress entry and the batch lost
    loss = account_failover({S: master}, {S: promoted}, checkpoint=11)
    assert loss.lost_entries == {"p": 1, "b": 1}
    assert (loss.lost_changes, loss.recovered, loss.unrecovered) == (2, 2, 0)
    assert loss.acknowledged_lost == 0


def test_a_lost_change_below_the_checkpoint_was_acknowledged() -> None:
    master = [upsert("1-0", 10, b"a"), upsert("2-0", 12, b"b")]
    loss = account_failover({S: master}, {S: [master[1]]}, checkpoint=11)
    assert (loss.lost_changes, loss.acknowledged_lost, loss.unrecovered) == (1, 1, 1)


def test_a_lost_change_with_a_surviving_copy_is_kept_not_acknowledged_lost() -> None:
    # an earlier replay's copy (id 2-0) survived; the first copy (1-0) was lost
    master = [upsert("1-0", 10, b"a"), upsert("2-0", 10, b"a")]
    loss = account_failover({S: master}, {S: [master[1]]}, checkpoint=11)
    assert (loss.lost_changes, loss.kept_in_another_copy, loss.acknowledged_lost) == (1, 1, 0)


def test_a_different_document_at_the_same_ts_is_not_a_recovery() -> None:
    master = [upsert("1-0", 10, b"a")]
    other = (b"5-0", encode_changes(10, [(b"a", b"{}")]))
    loss = account_failover({S: master}, {S: [other]}, checkpoint=5)
    assert (loss.recovered, loss.unrecovered) == (0, 1)


def test_an_entry_on_the_promoted_node_the_master_never_had_is_named() -> None:
    master = [upsert("2-0", 10, b"a")]
    loss = account_failover({S: master}, {S: [upsert("1-0", 9, b"z"), *master]}, 5)
    assert loss.unknown_on_promoted == 1
