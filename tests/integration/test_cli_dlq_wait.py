"""``searchsync dlq retry`` honours REDIS_WAIT_REPLICAS: a letter is deleted only once its
re-appended entry is on the replicas asked for.

On a Redis Cluster the entry (its partition's slot) and the letter (the view's slot) live
on different nodes: without WAIT, a failover of the entry's node after the XDEL loses
the change from both. The CLI's StreamWriter was built without the setting, so it never
waited. A private redis-server without replicas stands in: with REDIS_WAIT_REPLICAS=1
the retry must fail and keep the letter.

Services: the devstack PostgreSQL (a private FreshMart schema), a private Materialize
emulator and a private redis-server (tests.support.producer.Stack); the CLI as a process.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from searchsync.common.entries import DeadLetter, encode_dead_letter
from tests.support.pipeline import CLI
from tests.support.producer import Stack, stack_fixture

KEY = b"order:FM-1001"

stack = stack_fixture(orders=2, partitions=2)


def test_a_letter_stays_until_its_entry_is_on_the_replicas_asked_for(stack: Stack) -> None:
    client = stack.sync_redis()
    letter = DeadLetter(ts=1, op=b"u", key=KEY, reason="test", source="p0/1-0", doc=b"{}")
    letter_id: Any = client.xadd(stack.keys.dlq, encode_dead_letter(letter))  # type: ignore[arg-type]
    waited = subprocess.run(
        [str(CLI), "dlq", "retry", "--all", "--yes"],
        env={
            **os.environ,
            **stack.env(),
            "REDIS_WAIT_REPLICAS": "1",
            "REDIS_WAIT_TIMEOUT_MS": "50",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert waited.returncode != 0, (waited.stdout, waited.stderr)
    assert waited.returncode == 1 and "Traceback" not in waited.stderr, waited.stderr
    assert "0 of 1 Redis replicas" in waited.stderr and "stay in the dlq" in waited.stderr
    assert [i for i, _ in client.xrange(stack.keys.dlq)] == [letter_id]  # type: ignore[union-attr]
