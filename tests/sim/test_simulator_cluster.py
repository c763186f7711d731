"""The simulator with the producer writing as on a Redis Cluster (run_schedule's
``redis_nodes``): producer.writer groups each round trip's commands by the node of
their key slot and sends the groups one after the other, the high-water mark's node
first, and moves the checkpoint in a round trip of its own. A cut anywhere in that
order (a node failing between or within groups) must still only replay."""

from __future__ import annotations

from tests.sim.plants import PRODUCER_PLANTS
from tests.sim.schedule import run_schedule

CLUSTER_SCHEDULES = 100
NODES = 3


def test_schedules_on_a_three_master_cluster_keep_every_invariant() -> None:
    outcomes = [run_schedule(seed, redis_nodes=NODES) for seed in range(CLUSTER_SCHEDULES)]
    failed = [o for o in outcomes if not o.ok]
    assert not failed, "\n\n".join(o.report() for o in failed[:3])


def test_on_a_cluster_the_simulator_still_finds_a_checkpoint_moved_before_its_changes() -> None:
    planted = run_schedule(0, session=PRODUCER_PLANTS["checkpoint-before-write"], redis_nodes=NODES)
    assert planted.violation is not None
    assert "checkpoint moved to" in planted.violation and "in no stream" in planted.violation
    assert f"--redis-nodes {NODES}" in planted.replay
