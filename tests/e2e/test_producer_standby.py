"""Two producers of one view: one writes, the other stands by and takes over on kill -9.

Services and processes as in tests/e2e/test_pipeline.py (real PostgreSQL, a private
emulator and redis-server, the shared OpenSearch node, real producer, consumer,
load generator and CLI processes). Before the producer lease, two producers of one
view both wrote and overwrote each other's checkpoint (it went backwards).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.pipeline import Pipeline, pipeline_of
from tests.support.producer import ProducerProcess, start_load, wait_for

pytestmark = pytest.mark.timeout(300)

LEASE_TTL = 2.0


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=300, partitions=4, realistic=True) as pipe:
        yield pipe


class CheckpointWatch:
    """Reads the checkpoint every 20 ms; records every time it went backwards."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._redis = pipeline.stack.sync_redis()
        self._key = pipeline.stack.keys.checkpoint
        self.backwards: list[tuple[int, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = 0
        while not self._stop.is_set():
            raw = self._redis.get(self._key)
            value = int(raw) if raw is not None else 0
            if value < last:
                self.backwards.append((last, value))
            last = max(last, value)
            self.samples += 1
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def producer(pipeline: Pipeline, name: str) -> ProducerProcess:
    return pipeline.stack.producer(**pipeline.env(PRODUCER_NAME=name))


def leader_and_standby(pipeline: Pipeline) -> tuple[ProducerProcess, ProducerProcess]:
    """prod-a holding the lease, prod-b standing by, a consumer, everything synced."""
    a = producer(pipeline, "prod-a")
    a.wait_log("Holding the producer lease")
    b = producer(pipeline, "prod-b")
    b.wait_log("Standing by: the producer lease")
    pipeline.consumer("c1")
    pipeline.wait_synced()
    return a, b


def takeover_seconds(killed: ProducerProcess, standby: ProducerProcess) -> float:
    """Kill -9 the active producer; seconds until the standby holds the lease."""
    before = standby.log().count("Holding the producer lease")
    started = time.monotonic()
    killed.kill()
    standby.wait_log("Holding the producer lease", timeout=30, count=before + 1)
    return time.monotonic() - started


def test_a_standby_takes_over_within_the_lease_ttl_and_nothing_is_lost(
    pipeline: Pipeline,
) -> None:
    a, b = leader_and_standby(pipeline)
    watch = CheckpointWatch(pipeline)
    load = start_load(pipeline.stack, rate=60, seconds=12)
    takeovers: list[float] = []
    try:
        time.sleep(3)
        takeovers.append(takeover_seconds(a, b))  # b writes from a's checkpoint on
        a = producer(pipeline, "prod-a")  # back as the standby
        a.wait_log("Standing by: the producer lease")
        time.sleep(2)
        takeovers.append(takeover_seconds(b, a))
    finally:
        _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    pipeline.wait_synced(timeout=120)
    watch.close()
    report = pipeline.verify(settle=20)
    assert report["ok"], (report, pipeline.logs())
    assert report["view_count"] == report["index_count"] >= 300
    assert pipeline.status()["dlq_length"] == 0
    assert watch.samples > 100 and watch.backwards == [], watch.backwards
    # the lease is held LEASE_TTL minus one tick; the standby tries every tick
    assert max(takeovers) <= LEASE_TTL + 1.0, takeovers
    assert a.terminate(timeout=10) == 0
    assert "Producer stopped" in a.log()


def test_two_producers_never_write_at_once(pipeline: Pipeline) -> None:
    """The standby writes nothing: every entry and the checkpoint come from the holder."""
    a, b = leader_and_standby(pipeline)
    assert "Starting SUBSCRIBE" not in b.log()
    client = pipeline.stack.sync_redis()
    holder = client.get(pipeline.stack.keys.producer_lease)
    assert isinstance(holder, bytes) and holder.endswith(b":prod-a")
    # a clean stop hands the lease over at once, without waiting for it to expire
    started = time.monotonic()
    assert a.terminate(timeout=10) == 0
    b.wait_log("Holding the producer lease", timeout=10)
    assert time.monotonic() - started < LEASE_TTL
    wait_for(lambda: "Starting SUBSCRIBE" in b.log(), 10, "the new holder's session")


def test_a_paused_producer_cannot_move_the_checkpoint_back(pipeline: Pipeline) -> None:
    """SIGSTOP the active producer past its lease (a GC pause, a frozen VM): the standby
    takes over and moves on; the woken producer's stale checkpoint is refused."""
    a, b = leader_and_standby(pipeline)
    watch = CheckpointWatch(pipeline)
    load = start_load(pipeline.stack, rate=60, seconds=12)
    try:
        time.sleep(3)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        b.wait_log("Holding the producer lease", timeout=30)
        time.sleep(3)  # b writes on; a's last frontier is now well behind
        a.proc.send_signal(signal.SIGCONT)
        a.wait_log("Standing by", timeout=30)
    finally:
        _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    pipeline.wait_synced(timeout=120)
    watch.close()
    assert watch.backwards == [], f"the checkpoint went back: {watch.backwards}"
    report = pipeline.verify(settle=20)
    assert report["ok"], (report, pipeline.logs())
