"""producer.writer's routing on Redis Cluster (pure parts): each command's key, and the
per-node groups sent one after the other in the order of their first command."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.producer.writer import Packed, command_key, group_by_node


def test_the_key_of_each_command_the_writer_sends() -> None:
    assert command_key((b"XADD", b"searchsync:{v:p1}", b"*", b"f", b"v")) == b"searchsync:{v:p1}"
    assert command_key((b"ZADD", b"searchsync:{v}:high_water", b"GT", "5", b"ts")) is not None
    assert command_key(Packed((b"*3\r\n",), b"searchsync:{v:p0}")) == b"searchsync:{v:p0}"
    fenced = (b"EVAL", "script", b"2", b"searchsync:{v}:producer", b"searchsync:{v}:checkpoint")
    assert command_key(fenced) == b"searchsync:{v}:producer"
    assert command_key((b"EVAL", "return 1", b"0")) is None
    assert command_key((b"MULTI",)) is None


nodes = st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), max_size=30)


@given(nodes)
def test_groups_keep_every_command_once_in_order_first_node_first(names: list[str | None]) -> None:
    groups = group_by_node(names)
    assert sorted(i for group in groups for i in group) == list(range(len(names)))
    assert all(group == sorted(group) for group in groups)  # a node's commands in order
    firsts = [group[0] for group in groups]
    assert firsts == sorted(firsts)  # nodes in the order of their first command
    first = next((name for name in names if name is not None), None)
    for group in groups:  # one node per group; keyless commands go with the first's node
        assert len({names[i] if names[i] is not None else first for i in group}) == 1


def test_the_high_water_mark_is_answered_before_any_other_node_gets_an_entry() -> None:
    # ZADD high_water (view node "a"), XADDs to partitions on "b" and "a", the letters
    names = ["a", "b", "a", "b", "a"]
    assert group_by_node(names) == [[0, 2, 4], [1, 3]]
