"""``searchsync dlq retry`` when Redis refuses the append, and under another stream layout.

Services: the devstack PostgreSQL (a private FreshMart schema), a private
Materialize emulator and a private redis-server (tests.support.producer.Stack);
the ``searchsync`` CLI as a real process. No producer or consumer runs: the test
breaks the key's partition stream by hand.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from searchsync.common.entries import Change, DeadLetter, decode_entry, encode_dead_letter
from searchsync.common.partition import partition_of
from tests.support.pipeline import CLI
from tests.support.producer import Stack, stack_fixture

KEY = b"order:FM-1001"


stack = stack_fixture(orders=2, partitions=2)


def retry(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "dlq", "retry", "--all", "--yes"],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_letter_stays_until_its_entry_is_written(stack: Stack) -> None:
    client = stack.sync_redis()
    keys = stack.keys
    letter = DeadLetter(ts=1, op=b"u", key=KEY, reason="test", source="p0/1-0", doc=b"{}")
    letter_id: Any = client.xadd(keys.dlq, encode_dead_letter(letter))  # type: ignore[arg-type]
    stream = keys.stream(partition_of(KEY, stack.partitions))
    client.set(stream, "not a stream")  # XADD now fails with WRONGTYPE

    refused = retry(stack)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Redis refused a write" in refused.stderr and "WRONGTYPE" in refused.stderr
    assert [i for i, _ in client.xrange(keys.dlq)] == [letter_id]  # type: ignore[union-attr]

    client.delete(stream)
    done = retry(stack)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "retried: current row appended as an upsert" in done.stdout
    assert client.xlen(keys.dlq) == 0
    entries: Any = client.xrange(stream)
    ((_, fields),) = entries
    (change,) = decode_entry(fields)  # type: ignore[misc]
    assert isinstance(change, Change) and change.key == KEY and change.ts > 1
    assert change.doc is not None and b'"order_id":"order:FM-1001"' in change.doc
    high_water: Any = client.zscore(keys.high_water, "ts")
    assert int(high_water) >= change.ts
    # counted into written:p<N> (the refused round trip's HINCRBY may have run too: Redis
    # runs a pipeline's other commands; common.buffer corrects such drift when idle)
    partition = partition_of(KEY, 2)
    written: Any = client.hget(keys.counts(partition), keys.written_field(partition))
    assert int(written or 0) >= 1


def test_retry_refuses_streams_of_another_layout(stack: Stack) -> None:
    client = stack.sync_redis()
    client.hset(
        stack.keys.meta,
        mapping={"layout": "2", "partitions": "3", "view": Stack.VIEW, "key_column": "order_id"},
    )
    letter = DeadLetter(ts=1, op=b"u", key=KEY, reason="test", source="p0/1-0")
    client.xadd(stack.keys.dlq, encode_dead_letter(letter))  # type: ignore[arg-type]
    refused = retry(stack)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "STREAM_PARTITIONS=2" in refused.stderr and "STREAM_PARTITIONS=3" in refused.stderr
    assert client.xlen(stack.keys.dlq) == 1
    assert not any(client.exists(stream) for stream in stack.keys.streams())
