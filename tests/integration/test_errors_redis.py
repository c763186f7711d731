"""common/errors.classify on what a real Redis answers, as redis-py raises it.

Services: a private redis-server (Debian's, started here). Each condition is made for
real — memory full, a replica, a flushed script cache, a lost consumer group, a key
of another type, an ACL user without the command — and the error redis-py raises is
classified: the conditions a server recovers from are transient (the producer and the
consumers back off and retry), the ones a retry cannot fix are fatal (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis import exceptions as redis_errors

from searchsync.common.errors import Failure, classify
from tests.support.services import PrivateRedis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[redis.Redis]:
    private = PrivateRedis(tmp_path)
    private.start()
    client = redis.Redis(port=private.port)
    try:
        yield client
    finally:
        client.close()
        private.kill()


def raised(call: Callable[[], object]) -> redis_errors.RedisError:
    with pytest.raises(redis_errors.RedisError) as caught:
        call()
    return caught.value


def test_conditions_redis_recovers_from_are_transient(server: redis.Redis) -> None:
    server.config_set("maxmemory", 1)  # full: every write refused until memory is freed
    oom = raised(lambda: server.xadd("s", {"f": "v"}))
    server.config_set("maxmemory", 0)
    noscript = raised(lambda: server.evalsha("0" * 40, 0))
    nogroup = raised(lambda: server.xreadgroup("searchsync", "c1", {"s": ">"}))
    server.replicaof("127.0.0.1", "1")  # a replica of nobody: read-only
    readonly = raised(lambda: server.set("k", "v"))
    server.replicaof("NO", "ONE")
    for error in (oom, noscript, nogroup, readonly):
        assert classify(error) is Failure.TRANSIENT, repr(error)


def test_conditions_a_retry_cannot_fix_are_fatal(server: redis.Redis) -> None:
    server.set("not-a-stream", "x")
    wrongtype = raised(lambda: server.xadd("not-a-stream", {"f": "v"}))
    server.acl_setuser("reader", enabled=True, passwords=["+pw"], commands=["+get"], keys=["*"])
    reader = redis.Redis(port=server.connection_pool.connection_kwargs["port"],
                         username="reader", password="pw")  # fmt: skip
    try:
        noperm = raised(lambda: reader.xadd("s", {"f": "v"}))
    finally:
        reader.close()
    for error in (wrongtype, noperm):
        assert classify(error) is Failure.FATAL, repr(error)
