"""The OpenSearch client every searchsync process uses, built from Settings.

Measured on the devstack node (2 cores, 1000-document bulks of 600-byte orders):
opensearch-py's AsyncOpenSearch spends ~1.8 ms of client CPU per request against
~1.6-2.4 ms for a hand-rolled aiohttp POST, both far below the ~80-120 ms the node
takes to index the bulk; the difference is noise, so the official client is used.
Its own retries are switched off: the callers' retry policy (RETRY_*,
consumer.outcomes) decides what is retried.
"""

from __future__ import annotations

from opensearchpy import AsyncOpenSearch, TransportError

from .config import Settings

__all__ = ["make_client", "status_of"]


def make_client(settings: Settings, *, maxsize: int = 16) -> AsyncOpenSearch:
    """An AsyncOpenSearch for OS_HOST:OS_PORT with OS_TIMEOUT_SECONDS per request.

    ``maxsize`` bounds the pooled HTTP connections (one per bulk in flight).
    No I/O happens until the first request. Close it with ``await client.close()``.
    """
    auth = (settings.os_user, settings.os_password) if settings.os_user else None
    return AsyncOpenSearch(
        hosts=[{"host": settings.os_host, "port": settings.os_port}],
        http_auth=auth,
        use_ssl=settings.os_use_ssl,
        timeout=settings.os_timeout_seconds,
        max_retries=0,
        retry_on_timeout=False,
        maxsize=maxsize,
    )


def status_of(error: TransportError) -> int | None:
    """The HTTP status of a failed request, None when there was no answer (connection, timeout)."""
    status = error.status_code
    return status if isinstance(status, int) else None
