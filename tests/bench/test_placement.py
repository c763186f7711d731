"""bench.consumers --opensearch-cpus: the devstack's OpenSearch JVM on one CPU, Redis,
the bench and what it starts on the others, and every one of them back on every CPU
afterwards. Real OpenSearch and Redis of the devstack (their processes' affinity)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from redis import Redis

from bench.consumers import ROOT, placed
from bench.processes import pid_file, threads_of
from devstack.env import require

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")


def _affinities(pid: int) -> set[frozenset[int]]:
    found = set()
    for tid in threads_of(pid):
        try:
            found.add(frozenset(os.sched_getaffinity(tid)))
        except ProcessLookupError:
            continue
    return found


def test_opensearch_gets_its_own_cpu_and_everything_is_given_back() -> None:
    jvm = pid_file(ROOT / ".devstack" / "opensearch" / "opensearch.pid")
    assert jvm is not None
    redis = Redis.from_url(require(("REDIS_URL",))["REDIS_URL"])
    redis_pid = int(redis.info("server")["process_id"])
    every = frozenset(range(os.cpu_count() or 1))
    with placed({0}, redis_pid) as placement:
        assert placement["opensearch"] == [0]
        assert _affinities(jvm) == {frozenset({0})}
        assert _affinities(redis_pid) == {every - {0}}
        # a consumer the bench starts inherits the bench's side
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert child.stdout.strip() == str(sorted(every - {0}))
    assert _affinities(jvm) == {every}
    assert _affinities(redis_pid) == {every}
    assert frozenset(os.sched_getaffinity(0)) == every


def test_a_placement_that_leaves_nothing_for_the_rest_is_refused() -> None:
    every = set(range(os.cpu_count() or 1))
    with pytest.raises(SystemExit, match="cannot place OpenSearch"), placed(every, os.getpid()):
        pass
