"""Every Redis client searchsync opens is built here, with one retry policy: none.

redis-py can retry a command by itself after a timeout or a dropped connection
(``Redis(host=…)`` does so 10 times by default in redis-py 8.1; ``from_url``, 0
times). A retry replays a command whose first run may have happened: a timed-out
XADD to the dead-letter stream is written twice, an XAUTOCLAIM counts a second
delivery, an HINCRBY of ``counts`` adds twice. Every searchsync loop already
recovers from a failed command from durable state (the producer from its
checkpoint, consumers from their pending entries), so the client must fail fast
and let that loop decide: no library retries, a bounded socket timeout, a
bounded connect timeout.
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["CONNECT_TIMEOUT_SECONDS", "SOCKET_TIMEOUT_SECONDS", "connect_redis", "no_retries"]

# Commands are small and local; a Redis that answers nothing for this long is down.
# Above the consumers' 100 ms blocking reads.
SOCKET_TIMEOUT_SECONDS: Final = 10.0
CONNECT_TIMEOUT_SECONDS: Final = 5.0


def no_retries() -> Retry:
    """redis-py's retry object that never retries (see the module docstring)."""
    return Retry(NoBackoff(), 0)


def connect_redis(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    client_name: str | None = None,
) -> Redis:
    """A client for REDIS_URL that never retries a command on its own.

    Each command waits at most ``socket_timeout`` seconds for its reply, each
    connection attempt at most CONNECT_TIMEOUT_SECONDS; then it raises
    redis.exceptions.TimeoutError / ConnectionError. No I/O happens until the
    first command. Close it with ``await client.aclose()``.
    """
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        retry=no_retries(),
        retry_on_error=[],
        client_name=client_name,
    )
