"""common/errors.py: one transient/fatal taxonomy for the producer and the consumers."""

from __future__ import annotations

import psycopg
import pytest
from opensearchpy import exceptions as opensearch_errors
from psycopg import errors as pg_errors
from redis import exceptions as redis_errors

from searchsync.common.errors import (
    Failure,
    FatalError,
    TransientError,
    classify,
    is_transient,
)
from searchsync.common.index import IndexLayoutError
from searchsync.common.meta import StreamLayoutError
from tests.support.redis_replies import reply


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        redis_errors.ConnectionError("Error 111 connecting"),
        redis_errors.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        redis_errors.TimeoutError("Timeout reading from socket"),
        # the cluster client's own, raised without a reply: it gave up redirecting, or its
        # slot map has a hole during a failover
        redis_errors.ClusterError("TTL exhausted."),
        redis_errors.SlotNotCoveredError("Command # 1 (GET k) of pipeline: slot 866 not covered"),
        # as redis-py raises a reply (its parser: a class of its own for some codes)
        reply("OOM command not allowed when used memory > 'maxmemory'."),
        reply("READONLY You can't write against a read only replica."),
        reply("NOSCRIPT No matching script. Please use EVAL."),
        reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        reply("TRYAGAIN Multiple keys request during rehashing of slot"),
        reply("CLUSTERDOWN The cluster is down"),
        reply("BUSY Redis is busy running a script."),
        reply("MISCONF Redis is configured to save RDB snapshots, but it's currently unable"),
        reply("NOREPLICAS Not enough good replicas to write."),
        reply("NOGROUP No such key 'searchsync:v:p0' or consumer group 'searchsync'"),
        reply("UNBLOCKED the stream key no longer exists"),
        redis_errors.InvalidResponse("Protocol Error: b'x'"),
        opensearch_errors.ConnectionError("N/A", "refused", OSError()),
        opensearch_errors.ConnectionTimeout("TIMEOUT", "timed out", TimeoutError()),
        opensearch_errors.SSLError("N/A", "certificate verify failed", OSError()),
        opensearch_errors.AuthenticationException(401, "", {}),
        opensearch_errors.TransportError(429, "es_rejected_execution_exception", {}),
        opensearch_errors.TransportError(503, "unavailable", {}),
        psycopg.OperationalError("connection refused"),
        pg_errors.lookup("53200")("SUBSCRIBE fell behind"),
        ConnectionResetError(),
        TimeoutError(),
    ],
    ids=repr,
)
def test_transient_for_both_sides(error: BaseException) -> None:
    assert classify(error) is Failure.TRANSIENT
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        FatalError("x"),
        StreamLayoutError("STREAM_PARTITIONS", "4 here, the streams have 8"),
        IndexLayoutError("orders is a concrete index"),
        reply("WRONGTYPE Operation against a key holding the wrong kind of value"),
        reply("NOPERM this user has no permissions to run the 'xadd' command"),
        reply("BUSYGROUP Consumer Group name already exists"),
        reply("ERR unknown command 'XAUTOCLAIM'"),
        opensearch_errors.RequestError(400, "mapper_parsing_exception", {}),
        pg_errors.lookup("42P01")("unknown catalog item"),
        pg_errors.lookup("28P01")("password authentication failed"),
    ],
    ids=repr,
)
def test_fatal_for_both_sides(error: BaseException) -> None:
    assert classify(error) is Failure.FATAL
    assert not is_transient(error)


def test_what_it_cannot_place_is_unknown() -> None:
    # the producer exits on these, a consumer's runner charges the entries in hand
    assert classify(ValueError("a bug")) is Failure.UNKNOWN
    assert classify(KeyError("b")) is Failure.UNKNOWN
    assert not is_transient(ValueError("a bug"))


def test_the_producer_classifies_errors_without_loading_opensearch_py() -> None:
    # opensearch-py pulls in aiohttp and requests (~20 MB of the producer's RSS, 0.3 s of
    # its start); the producer never talks to OpenSearch, and common.errors used to
    # import it for the taxonomy's two OpenSearch classes
    import subprocess
    import sys

    probe = (
        "import sys, searchsync.producer.main; "
        "print(sorted(m for m in ('opensearchpy', 'aiohttp', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"
