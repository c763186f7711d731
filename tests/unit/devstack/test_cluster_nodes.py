"""tests/cluster/stack.py's reading of CLUSTER NODES (what the cluster tests decide
masters, replicas and failures from), on a reply redis-server 7.0 gave here."""

from __future__ import annotations

from tests.cluster.stack import parse_cluster_nodes

# CLUSTER NODES of 7002 on the cluster devstack, once 7005 (a master) was killed with -9,
# marked FAIL, and its replica 7001 promoted (configEpoch 8)
AFTER_FAILOVER = """\
7a2e726fc1bfcfae26abfa94d900a2706dbfa134 127.0.0.1:7006@17006 slave 358ecc0d851ad99331d7eae9d664340a4e0c9da2 0 1796411831127 2 connected
74a165dcfd0c30042acd9bd1974bf234ce917c4d 127.0.0.1:7004@17004 slave e9e295f1c669d3aafd436b3b031f05b77d62f641 0 1796411831027 3 connected
358ecc0d851ad99331d7eae9d664340a4e0c9da2 127.0.0.1:7002@17002 myself,master - 0 1796411831000 2 connected 5461-10922
5afc127f491bf5552b5724b3eb385d1cf5f91f74 127.0.0.1:7001@17001 master - 0 1796411831027 8 connected 0-5460
92bed82a8d72f5ed8fc3fd3ba9213ceb31faf311 127.0.0.1:7005@17005 master,fail - 1796411828094 1796411827085 7 disconnected
e9e295f1c669d3aafd436b3b031f05b77d62f641 127.0.0.1:7003@17003 master - 0 1796411830926 3 connected 10923-16383
"""  # noqa: E501


def test_roles_slots_and_failures_are_read() -> None:
    nodes = {n.port: n for n in parse_cluster_nodes(AFTER_FAILOVER)}
    assert sorted(nodes) == [7001, 7002, 7003, 7004, 7005, 7006]
    assert nodes[7001].is_master and nodes[7001].slots == ("0-5460",)
    assert nodes[7005].failed and nodes[7005].is_master and nodes[7005].slots == ()
    assert not nodes[7002].failed and "myself" in nodes[7002].flags
    assert nodes[7004].master_id == nodes[7003].node_id and not nodes[7004].is_master
    assert nodes[7006].master_id == nodes[7002].node_id
    assert nodes[7003].master_id is None


def test_a_suspicion_is_not_a_failure() -> None:
    (node,) = parse_cluster_nodes(
        "92bed82a 127.0.0.1:7005@17005 master,fail? - 1796411828094 0 7 connected 0-5460\n"
    )
    assert not node.failed and node.is_master and node.slots == ("0-5460",)
