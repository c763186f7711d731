"""The OpenSearch client every searchsync process uses, built from Settings.

Measured on the devstack node (2 cores, 1000-document bulks of 600-byte orders):
opensearch-py's AsyncOpenSearch spends ~1.8 ms of client CPU per request against
~1.6-2.4 ms for a hand-rolled aiohttp POST, both far below the ~80-120 ms the node
takes to index the bulk; the difference is noise, so the official client is used.
Its own retries are switched off: the callers' retry policy (RETRY_*,
consumer.outcomes) decides what is retried.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from opensearchpy import (
    AsyncHttpConnection,
    AsyncOpenSearch,
    AsyncTransport,
    SSLError,
    TransportError,
)
from opensearchpy import ConnectionError as OpenSearchConnectionError

from .config import Settings
from .errors import FatalError
from .tls import warn_once

__all__ = ["NodesTransport", "explain", "make_client", "never_sent", "nodes_of", "status_of"]


def _auth(settings: Settings) -> Any:
    """Basic credentials, a SigV4 signer (OS_AUTH=sigv4), or None."""
    if settings.os_auth == "sigv4":
        # botocore is the optional extra searchsync[aws]; config checked it is importable
        import botocore.exceptions  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import botocore.session  # type: ignore[import-untyped,import-not-found,unused-ignore]
        from opensearchpy import AWSV4SignerAsyncAuth

        # the standard chain: environment, shared files, container or instance role
        try:
            credentials = botocore.session.get_session().get_credentials()
        except botocore.exceptions.BotoCoreError as error:  # e.g. AWS_PROFILE names none
            raise FatalError(
                f"OS_AUTH=sigv4: AWS credentials could not be loaded: {error}"
            ) from error
        if credentials is None:
            raise FatalError(
                "OS_AUTH=sigv4: botocore found no AWS credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a container or instance role)"
            )

        class RefreshingSigner(AWSV4SignerAsyncAuth):  # type: ignore[misc,unused-ignore]
            """A credential refresh that fails (the instance metadata service or STS
            away) is a connection error: retried like one, never charged to the changes
            in hand as an attempt (which could end them in the dead-letter stream)."""

            def __call__(self, *args: Any, **kwargs: Any) -> dict[str, str]:
                try:
                    return dict(super().__call__(*args, **kwargs))
                except botocore.exceptions.BotoCoreError as error:
                    raise OpenSearchConnectionError(
                        "N/A", f"OS_AUTH=sigv4: AWS credentials could not be refreshed: {error}",
                        error,
                    ) from error  # fmt: skip

        return RefreshingSigner(credentials, settings.os_aws_region, settings.os_aws_service)
    if settings.os_user:
        return (settings.os_user, settings.os_password)
    return None


def never_sent(error: OpenSearchConnectionError) -> bool:
    """The connection to the node could not be opened (refused, no route, a name that does
    not resolve): the request never left, so another node may take it. Not a TLS
    handshake failure (every node would fail it alike) nor a connection lost after the
    request went out (the node may have applied it)."""
    info = error.info
    return isinstance(info, aiohttp.ClientConnectorError) and not isinstance(
        info, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError
    )


class NodesTransport(AsyncTransport):
    """opensearch-py's transport, which with max_retries=0 raises the first failure even
    when other nodes are live; this one sends a request to the next node (up to every
    node once) when the connection to one could not be opened (:func:`never_sent`),
    which the base class has then marked dead. Every other failure is raised as before,
    for the caller's retry policy (RETRY_*, consumer.outcomes) to judge. Without it a
    CLI command fails whenever its shuffled pool reaches a dead node, and a consumer
    backs off for a bulk another node would have taken at once."""

    async def perform_request(self, *args: Any, **kwargs: Any) -> Any:
        """The base class's request (same arguments); raises its errors (the last
        node's, if none could be reached), each node's own OS_TIMEOUT_SECONDS applying."""
        for _ in range(len(self.hosts) - 1):
            try:
                return await super().perform_request(*args, **kwargs)
            except OpenSearchConnectionError as error:
                if not never_sent(error):
                    raise
        return await super().perform_request(*args, **kwargs)


def nodes_of(settings: Settings) -> str:
    """The OpenSearch nodes for an operator: ``host:port``, or with several nodes in
    OS_HOSTS ``one of host:port, host:port, …`` (an IPv6 address in brackets)."""
    named = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in settings.opensearch_nodes()]
    return named[0] if len(named) == 1 else "one of " + ", ".join(named)


def make_client(settings: Settings, *, maxsize: int = 16) -> AsyncOpenSearch:
    """An AsyncOpenSearch for OS_HOSTS' nodes (else OS_HOST:OS_PORT) with
    OS_TIMEOUT_SECONDS per request.

    With several nodes opensearch-py's transport sends each request to the next one
    (round robin, from a shuffled start); a node that refuses or drops the connection,
    or answers 502/503/504, is skipped for 60 s (doubled at each failure in a row, up to
    32 min; all skipped: one is tried anyway). A request whose connection could not be
    opened goes to the next node (:class:`NodesTransport`); any other failure is raised
    as with one node, and the caller's retry sends the next attempt to a live node. A
    timeout does not mark the node (a slow bulk is not a dead node), so a node that
    hangs costs OS_TIMEOUT_SECONDS per request sent to it.

    With OS_USE_SSL: HTTPS, the server's certificate checked against OS_CA_CERTS (or
    SSL_CERT_FILE, else certifi's roots) unless OS_VERIFY_CERTS=false (a WARNING once per process),
    OS_CLIENT_CERT/OS_CLIENT_KEY presented when set; with OS_AUTH=sigv4 every request
    signed with the credentials botocore's chain finds (FatalError when it finds none,
    or a named profile does not exist). ``maxsize`` bounds the pooled
    HTTP connections (one per bulk in flight). No I/O happens until the first
    request (a TLS failure then raises opensearchpy.SSLError, a refused login
    AuthenticationException). Close it with ``await client.close()``.
    """
    warn_once(settings, "OpenSearch")
    tls: dict[str, Any] = {}
    if settings.os_use_ssl:
        tls = {
            "verify_certs": settings.os_verify_certs,
            # the WARNING above says it once; urllib3's would say it on every request
            "ssl_show_warn": False,
        }
        if settings.os_ca_certs:
            tls["ca_certs"] = settings.os_ca_certs
        if settings.os_client_cert:
            tls["client_cert"] = settings.os_client_cert
            tls["client_key"] = settings.os_client_key
    if settings.os_auth == "sigv4":
        # the default AIOHttpConnection takes basic credentials only (it fails on a
        # signer: 'AWSV4SignerAsyncAuth' object has no attribute 'encode');
        # AsyncHttpConnection calls it per request with the method, URL and body
        tls["connection_class"] = AsyncHttpConnection
    return AsyncOpenSearch(
        hosts=[{"host": host, "port": port} for host, port in settings.opensearch_nodes()],
        transport_class=NodesTransport,
        http_auth=_auth(settings),
        use_ssl=settings.os_use_ssl,
        timeout=settings.os_timeout_seconds,
        max_retries=0,
        retry_on_timeout=False,
        maxsize=maxsize,
        **tls,
    )


def status_of(error: TransportError) -> int | None:
    """The HTTP status of a failed request, None when there was no answer (connection, timeout)."""
    status = error.status_code
    return status if isinstance(status, int) else None


def explain(settings: Settings, error: TransportError) -> str:
    """One line for an operator: OpenSearch's address (:func:`nodes_of`) and what went
    wrong, with the setting to look at for a refused login (or, with OS_AUTH=sigv4, a
    refused signature), a failed TLS handshake or plain HTTP sent to an HTTPS port. Never a
    password or a secret key (opensearch-py's errors hold none)."""
    # with several nodes a refused connection's info names the one that failed
    where = f"OpenSearch at {nodes_of(settings)}"
    status = status_of(error)
    if settings.os_auth == "sigv4" and status in (401, 403):
        # Amazon's answer to a bad signature, an unknown key or a wrong scope is 403
        return (
            f"{where} refused the signed request ({status}): check the AWS credentials "
            "botocore finds (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
            f"the instance role), OS_AWS_REGION and OS_AWS_SERVICE: {error}"
        )
    if status == 401:
        return f"{where} refused the login (401): check OS_USER and OS_PASSWORD"
    if status == 403:
        return f"{where} refused the request (403, the role lacks a permission): {error}"
    if isinstance(error, SSLError) or "SSL" in str(error.info):
        return f"{where}: TLS handshake failed (OS_CA_CERTS, OS_VERIFY_CERTS): {error.info}"
    if isinstance(error, OpenSearchConnectionError):
        hint = ""
        if not settings.os_use_ssl and "disconnected" in str(error.info).lower():
            hint = " (an HTTPS port drops plain HTTP: OS_USE_SSL=true if it is one)"
        return f"{where}: no answer: {error.info}{hint}"
    return f"{where}: {error}"
