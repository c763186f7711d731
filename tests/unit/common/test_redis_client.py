"""common/redis_client.py: every client fails fast and never replays a command itself."""

from __future__ import annotations

from redis.asyncio.connection import SSLConnection

from searchsync.common.config import load_settings
from searchsync.common.redis_client import (
    CONNECT_TIMEOUT_SECONDS,
    SOCKET_TIMEOUT_SECONDS,
    connect_redis,
)


def test_clients_never_retry_a_command() -> None:
    # Redis(host=...) of redis-py 8.1 retries 10 times: a timed-out XADD to the dlq
    # would be written twice, an XAUTOCLAIM counted twice (the module docstring)
    client = connect_redis(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    assert connection.retry.get_retries() == 0
    assert connection.retry_on_error == []
    assert connection.socket_timeout == SOCKET_TIMEOUT_SECONDS
    assert connection.socket_connect_timeout == CONNECT_TIMEOUT_SECONDS


def test_rediss_urls_get_tls() -> None:
    url = "rediss://user:secret@example.invalid:6380/2"
    client = connect_redis(load_settings({"REDIS_URL": url}))
    kwargs = client.connection_pool.connection_kwargs
    assert issubclass(client.connection_pool.connection_class, SSLConnection)
    assert (kwargs["username"], kwargs["db"]) == ("user", 2)
