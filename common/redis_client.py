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

REDIS_CLUSTER picks the client: ``true`` redis-py's ``RedisCluster`` (it follows
MOVED/ASK itself, up to its TTL, and reloads the slot map; every key layout-2 command
stays in one slot, common.keys), ``false`` a single Redis's, ``auto`` (the default)
asks the server once at start (``HELLO``: ``mode`` ``cluster``); a server that does
not answer then is taken as a single Redis, with a warning naming the setting.
The cluster client is returned typed as ``Redis``: the two share every command
searchsync sends, except what producer.writer routes itself (it checks the type).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final, cast

import redis as sync_redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry as SyncRetry

from .config import Settings
from .tls import redis_ssl, warn_once

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "SOCKET_TIMEOUT_SECONDS",
    "connect_redis",
    "is_cluster",
    "no_retries",
]

log = logging.getLogger("searchsync.redis")

# Commands are small and local; a Redis that answers nothing for this long is down.
# Above the consumers' 100 ms blocking reads.
SOCKET_TIMEOUT_SECONDS: Final = 10.0
CONNECT_TIMEOUT_SECONDS: Final = 5.0


def no_retries() -> Retry:
    """redis-py's retry object that never retries (see the module docstring)."""
    return Retry(NoBackoff(), 0)


# what a plain-text client sees from a TLS-only port: the server hangs up on it
_DROPPED: Final = re.compile(r"reset by peer|closed by server|Connection closed", re.IGNORECASE)


class _Named:
    """Connection errors say "Redis at host:port: …" (redis-py's own say neither the
    service nor, for a refused login or a TLS failure, the address), with the same
    exception type, so callers' handling is unchanged. Never the URL: it holds the
    password."""

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except RedisError as error:
            where = getattr(self, "path", "") or f"{getattr(self, 'host', '?')}:"
            where += str(getattr(self, "port", "")) if not getattr(self, "path", "") else ""
            text = f"Redis at {where}: {error}"
            if not isinstance(self, SSLConnection) and _DROPPED.search(str(error)):
                text += " (a TLS port drops plain-text clients: rediss:// if it is one)"
            raise type(error)(text) from error


class _NamedConnection(_Named, Connection):
    pass


class _NamedSSLConnection(_Named, SSLConnection):
    pass


class _NamedUnixConnection(_Named, UnixDomainSocketConnection):
    pass


_NAMED: Final[dict[type[AbstractConnection], type[AbstractConnection]]] = {
    Connection: _NamedConnection,
    SSLConnection: _NamedSSLConnection,
    UnixDomainSocketConnection: _NamedUnixConnection,
}


def is_cluster(settings: Settings) -> bool:
    """Whether REDIS_CLUSTER asks for the cluster client; ``auto``: one ``HELLO`` (its
    ``mode``) on a short-lived synchronous connection (at most CONNECT_TIMEOUT_SECONDS to connect
    and as long to answer); no answer counts as a single Redis (a warning says so)."""
    if settings.redis_cluster != "auto":
        return settings.redis_cluster == "true"
    probe = sync_redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        retry=SyncRetry(NoBackoff(), 0),
        **redis_ssl(settings),
    )
    try:
        # HELLO, not INFO: README's least-privilege ACL allows it (INFO is refused there)
        hello: Any = probe.execute_command("HELLO")  # type: ignore[no-untyped-call]
    except RedisError as error:
        log.warning(
            "REDIS_CLUSTER=auto could not ask Redis whether it is a cluster (%s): using a "
            "single Redis's client; set REDIS_CLUSTER=true or false to decide",
            type(error).__name__,
        )
        return False
    finally:
        probe.close()
    if isinstance(hello, list):  # RESP2 servers' flat list
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    mode = hello.get(b"mode", hello.get("mode", b"")) if isinstance(hello, dict) else b""
    return (mode.decode() if isinstance(mode, bytes) else str(mode)) == "cluster"


def connect_redis(
    settings: Settings,
    *,
    socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    client_name: str | None = None,
) -> Redis:
    """A client for REDIS_URL that never retries a command on its own (a cluster's
    follows redirections: module docstring).

    ``rediss://`` URLs use TLS, the server checked against REDIS_CA_CERTS (or the
    system's roots); an ACL user and password come from the URL. Each command waits
    at most ``socket_timeout`` seconds for its reply, each connection attempt at most
    CONNECT_TIMEOUT_SECONDS; then it raises redis.exceptions.TimeoutError /
    ConnectionError (AuthenticationError for a refused login), whose message starts
    "Redis at host:port:". No I/O happens until the first command. Close it with
    ``await client.aclose()``.
    """
    warn_once(settings, "Redis")
    if is_cluster(settings):
        return cast(
            Redis,
            RedisCluster.from_url(
                settings.redis_url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=no_retries(),
                client_name=client_name,
                **redis_ssl(settings),
            ),
        )
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        retry=no_retries(),
        retry_on_error=[],
        client_name=client_name,
        **redis_ssl(settings),
    )
    pool = client.connection_pool
    pool.connection_class = _NAMED.get(pool.connection_class, pool.connection_class)
    return client
