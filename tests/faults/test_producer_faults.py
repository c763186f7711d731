"""The producer under failure: kill -9 under load, backpressure, Redis and Materialize drops.

Services: the devstack PostgreSQL (private FreshMart schemas), private emulators
and private redis-servers that these tests kill; real ``python -m searchsync.producer.main``
processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.common.entries import Change
from tests.support.producer import (
    Stack,
    set_status,
    start_load,
    stream_changes,
    wait_for,
    xread_new,
)

VIEW = Stack.VIEW
# Text columns compared between the reference subscription and the documents.
COMPARED = ("order_id", "order_status", "customer_address", "delivery_task_status")


class Reference:
    """An independent SUBSCRIBE client: every diff after its AS OF, as Materialize gave it."""

    def __init__(self, stack: Stack) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.columns: list[str] = []
        self.frontier = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._conn = stack.emulator.connect()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "reference subscription did not start"

    def _run(self) -> None:
        try:
            cur = self._conn.cursor()
            cur.execute(
                f"DECLARE ref CURSOR FOR SUBSCRIBE (SELECT * FROM {VIEW}) "
                "WITH (PROGRESS, SNAPSHOT = false)"
            )
            while not self._stop.is_set():
                cur.execute("FETCH ALL ref WITH (timeout = '50ms')")
                if not self.columns and cur.description:
                    self.columns = [c.name for c in cur.description]
                for row in cur.fetchall():
                    ts = int(str(row[0]))
                    if row[1]:
                        self.frontier = max(self.frontier, ts)
                        self._ready.set()
                    else:
                        self.rows.append(row)
        except BaseException as error:  # reported by close()
            self._error = error
            self._ready.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._conn.close()
        if self._error is not None:
            raise self._error

    def expected(self, below: int) -> dict[tuple[int, str], dict[str, Any] | None]:
        """Per (ts, key) below ``below``: the key's one live row, or None for a delete.

        Consolidated here independently of producer/consolidate.py.
        """
        by_ts_key: dict[tuple[int, str], Counter[tuple[Any, ...]]] = {}
        for row in self.rows:
            ts = int(row[0])
            if ts < below:
                by_ts_key.setdefault((ts, row[3]), Counter())[tuple(row[3:])] += row[2]
        out: dict[tuple[int, str], dict[str, Any] | None] = {}
        names = self.columns[3:]
        for key, multiset in by_ts_key.items():
            live = [r for r, n in multiset.items() for _ in range(max(n, 0))]
            if len(live) == 1:
                out[key] = dict(zip(names, live[0], strict=True))
            elif not live and any(n < 0 for n in multiset.values()):
                out[key] = None
        return out


def checkpoint_of(stack: Stack) -> int:
    return int(stack.sync_redis().get(stack.keys.checkpoint) or 0)


@pytest.fixture
def loaded_stack() -> Iterator[Stack]:
    built = Stack(orders=300, realistic=True)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def small_stack() -> Iterator[Stack]:
    built = Stack(orders=60)
    try:
        yield built
    finally:
        built.close()


def test_kill_9_under_load_loses_no_change(loaded_stack: Stack) -> None:
    stack = loaded_stack
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 300 rows")
    reference = Reference(stack)
    load = start_load(stack, rate=150, seconds=8)
    kills = 0
    try:
        deadline = time.monotonic() + 30
        while load.poll() is None and time.monotonic() < deadline:
            time.sleep(1.2)
            producer.kill()
            kills += 1
            producer = stack.producer()
            producer.wait_log("Connected to Materialize for SUBSCRIBE")
        assert load.wait(30) == 0, load.stderr.read() if load.stderr else ""
        time.sleep(0.5)  # let the emulator stamp the last commits
        end = reference.frontier
        wait_for(lambda: checkpoint_of(stack) >= end, 30, f"the producer to pass ts {end}")
    finally:
        reference.close()
        if load.poll() is None:
            load.kill()
    assert kills >= 4
    expected = reference.expected(below=end)
    assert len(expected) > 200, "the load should have produced hundreds of changes"
    written: dict[tuple[int, bytes], list[Change]] = {}
    for change in stream_changes(stack.sync_redis(), stack.keys)[0]:
        written.setdefault((change.ts, change.key), []).append(change)
    missing = []
    for (ts, key), row in expected.items():
        found = written.get((ts, key.encode()), [])
        if not found:
            missing.append((ts, key))
            continue
        for change in found:  # duplicates are allowed, and must all say the same
            if row is None:
                assert change.doc is None, (ts, key)
            else:
                assert change.doc is not None, (ts, key)
                doc = json.loads(change.doc)
                assert doc["sync_version"] == ts
                assert {c: doc[c] for c in COMPARED} == {c: row[c] for c in COMPARED}
    assert not missing, f"{len(missing)} changes never reached the streams: {missing[:5]}"
    assert producer.terminate(timeout=5) == 0


def ack_everything(stack: Stack, group: str = "searchsync") -> None:
    """What a consumer does: read, acknowledge and count every entry of every partition."""
    client = stack.sync_redis()
    for partition in range(stack.partitions):
        stream = stack.keys.stream(partition)
        entries = xread_new(client, group, "test", stream)
        if not entries:
            continue
        client.xack(stream, group, *[entry_id for entry_id, _ in entries])
        changes = sum(int(f.get(b"n", b"1")) for _, f in entries if f[b"op"] in b"udb")
        client.hincrby(stack.keys.counts(partition), stack.keys.acked_field(partition), changes)


def test_backpressure_pauses_and_resumes(small_stack: Stack) -> None:
    stack = small_stack
    producer = stack.producer(
        BACKPRESSURE_THRESHOLD="20", BACKPRESSURE_RESUME="10", BUFFER_LOG_SECONDS="0.3"
    )
    producer.wait_log(f"Snapshot complete for {VIEW}: 60 rows")
    producer.wait_log("Backpressure activated: pausing SUBSCRIBE stream")
    producer.wait_log("Buffer size: 60 events (backpressure: active)")
    assert "[WARNING] Buffer size exceeds threshold: 60 events" in producer.log()
    assert "[ERROR] Buffer overflow: 60 events pending (backpressure activated)" in producer.log()
    set_status(stack, "order:FM-1001", "picking")  # while paused
    ack_everything(stack)
    producer.wait_log("Backpressure released: resuming SUBSCRIBE stream")

    def picked() -> bool:
        return any(
            c.key == b"order:FM-1001" and c.doc and json.loads(c.doc)["order_status"] == "picking"
            for c in stream_changes(stack.sync_redis(), stack.keys)[0]
        )

    wait_for(picked, 20, "the change made while paused")
    assert producer.terminate(timeout=5) == 0


def test_redis_restart_is_survived(small_stack: Stack) -> None:
    stack = small_stack
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 60 rows")
    wait_for(lambda: checkpoint_of(stack), 10, "a checkpoint")
    stack.redis.kill()
    producer.wait_log("SUBSCRIBE failed, retrying in")
    set_status(stack, "order:FM-1002", "picking")  # while Redis is down
    time.sleep(0.5)
    stack.redis.start()  # same port and directory: the AOF brings the data back

    def picked() -> bool:
        return any(
            c.key == b"order:FM-1002" and c.doc and json.loads(c.doc)["order_status"] == "picking"
            for c in stream_changes(stack.sync_redis(), stack.keys)[0]
        )

    wait_for(picked, 30, "the change made while Redis was down")
    log = producer.log()
    assert log.count("Connected to Materialize for SUBSCRIBE") >= 2
    # RETRY_INITIAL_BACKOFF=0.2, jittered into [0.1, 0.2] s
    assert re.search(r"\[WARNING\] SUBSCRIBE failed, retrying in 0\.[12]s:", log), log
    assert producer.terminate(timeout=5) == 0


def test_materialize_connection_drop_is_survived(small_stack: Stack) -> None:
    stack = small_stack
    producer = stack.producer()
    producer.wait_log(f"Snapshot complete for {VIEW}: 60 rows")
    wait_for(lambda: checkpoint_of(stack), 10, "a checkpoint")
    assert stack.emulator.admin("mzemu_drop_connections()") >= 1
    producer.wait_log("SUBSCRIBE failed, retrying in")
    producer.wait_log("Connected to Materialize for SUBSCRIBE", count=2)
    producer.wait_log("for the per-key state")  # resumed from the checkpoint
    set_status(stack, "order:FM-1003", "picking")

    def picked() -> bool:
        return any(
            c.key == b"order:FM-1003" and c.doc and json.loads(c.doc)["order_status"] == "picking"
            for c in stream_changes(stack.sync_redis(), stack.keys)[0]
        )

    wait_for(picked, 20, "a change after the reconnect")
    assert producer.log().count("receiving snapshot") == 1
    assert producer.terminate(timeout=5) == 0


def test_materialize_down_at_start_is_retried(small_stack: Stack) -> None:
    stack = small_stack
    stack.emulator.stop()
    producer = stack.producer()
    producer.wait_log("[ERROR] Connection refused to Materialize")
    producer.wait_log("SUBSCRIBE failed, retrying in")
    # the backoff grows: 0.2 s, then 0.4 s (jittered into [0.2, 0.4] s), ...
    wait_for(
        lambda: re.search(r"SUBSCRIBE failed, retrying in 0\.[234]s", producer.log()),
        30,
        "a longer backoff",
    )
    assert producer.terminate(timeout=5) == 0
    assert "Producer stopped" in producer.log()


def test_sigterm_while_materialize_hangs_exits_within_5_s(small_stack: Stack) -> None:
    stack = small_stack
    with socket.socket() as silent:  # accepts TCP connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        producer = stack.producer(MZ_PORT=str(silent.getsockname()[1]))
        producer.wait_log("Producer start plan")
        time.sleep(0.5)  # inside the connection attempt (MZ connect_timeout is 10 s)
        started = time.monotonic()
        assert producer.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5
    assert "Producer stopped" in producer.log()


def test_subscription_killed_while_paused_resumes_from_the_checkpoint() -> None:
    # A paused producer does not FETCH, so Materialize's queue for it grows (every
    # tick adds a progress message) until it ends the subscription: "SUBSCRIBE fell
    # behind". That is just another resume from the checkpoint.
    stack = Stack(orders=60, emulator_env={"MZEMU_MAX_BUFFERED_BYTES": "20000"})
    try:
        producer = stack.producer(BACKPRESSURE_THRESHOLD="20", BACKPRESSURE_RESUME="10")
        producer.wait_log("Backpressure activated: pausing SUBSCRIBE stream")
        set_status(stack, "order:FM-1007", "picking")  # while paused
        time.sleep(1.5)  # ~60 ticks of 25 ms: more than 20,000 bytes queued
        ack_everything(stack)
        producer.wait_log("Backpressure released: resuming SUBSCRIBE stream")
        # Materialize queues the error behind the rows already produced: the next
        # FETCH gets rows, then the error, and the producer resumes.
        producer.wait_log("SUBSCRIBE failed, retrying in")
        assert "SUBSCRIBE fell behind" in producer.log()
        producer.wait_log("for the per-key state")

        def picked() -> bool:
            return any(
                c.key == b"order:FM-1007"
                and c.doc is not None
                and json.loads(c.doc)["order_status"] == "picking"
                for c in stream_changes(stack.sync_redis(), stack.keys)[0]
            )

        wait_for(picked, 30, "the change made while paused")
        assert producer.terminate(timeout=5) == 0
    finally:
        stack.close()


def test_a_long_pause_ends_the_subscription_cleanly_and_resumes_from_the_checkpoint() -> None:
    # Materialize ends a transaction idle for idle_in_transaction_session_timeout; a
    # paused producer sends nothing. Here the timeout is 3 s and the consumers are gone
    # for 12 s: the producer must end its cursor itself (no error, nothing for
    # Materialize to keep) and resume exactly from its checkpoint afterwards (the
    # emulator keeps 10 min of history, as RETAIN HISTORY would).
    stack = Stack(orders=60, emulator_env={"MZEMU_IDLE_IN_TRANSACTION_SESSION_TIMEOUT_MS": "3000"})
    try:
        producer = stack.producer(BACKPRESSURE_THRESHOLD="20", BACKPRESSURE_RESUME="10")
        producer.wait_log("Backpressure activated: pausing SUBSCRIBE stream")
        set_status(stack, "order:FM-1009", "picking")  # while paused
        time.sleep(12)  # four times the timeout, without a consumer
        producer.wait_log("ending the SUBSCRIBE for")
        ack_everything(stack)
        producer.wait_log("Backpressure released: resuming SUBSCRIBE stream")
        producer.wait_log("for the per-key state", count=1)  # the resume, AS OF checkpoint

        def picked() -> bool:
            return any(
                c.key == b"order:FM-1009"
                and c.doc is not None
                and json.loads(c.doc)["order_status"] == "picking"
                for c in stream_changes(stack.sync_redis(), stack.keys)[0]
            )

        wait_for(picked, 20, "the change made while paused")
        log = producer.log()
        assert "SUBSCRIBE failed" not in log, log
        assert "idle" not in log.lower().replace("idle transaction", ""), log
        assert "refused to resume" not in log  # no snapshot + reconcile was needed
        assert producer.terminate(timeout=5) == 0
    finally:
        stack.close()
