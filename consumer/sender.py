"""Sending one ``_bulk`` request through the shared AsyncOpenSearch client.

The body is built from the producer's document bytes (consumer.bulk); the client
is opensearch-py's AsyncOpenSearch (see common.opensearch for why not raw
aiohttp). Whole-request failures become :class:`BulkFailed` with the HTTP status
(None when nothing was answered) and whether the TLS handshake was what failed,
which consumer.outcomes turns into a verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opensearchpy import AsyncOpenSearch, ConnectionTimeout, SSLError, TransportError
from opensearchpy import ConnectionError as OpenSearchConnectionError

from ..common.entries import Change
from ..common.opensearch import status_of
from .bulk import (
    BULK_PARAMS,
    BulkResponseError,
    ItemResult,
    decode_response,
    encode_body,
)
from .dualwrite import DualWrite, merge
from .outcomes import RequestVerdict, classify_request

__all__ = ["PROBE_TIMEOUT_SECONDS", "BulkFailed", "BulkSender"]

# A HEAD / that takes longer than this says OpenSearch is not answering.
PROBE_TIMEOUT_SECONDS = 5.0


class BulkFailed(Exception):
    """The request as a whole failed; no item outcome is known."""

    def __init__(self, status: int | None, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.tls = tls

    @property
    def verdict(self) -> RequestVerdict:
        return classify_request(self.status, tls=self.tls)


def _describe(error: TransportError) -> str:
    if isinstance(error, ConnectionTimeout):
        return "timeout"
    if isinstance(error, SSLError):
        return f"TLS handshake failed: {error.info}"
    if isinstance(error, OpenSearchConnectionError):
        return f"connection error: {error.info}"
    text = f"{error.status_code} {error.error}"
    info = error.info
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        reason = info["error"].get("reason")
        if reason:
            text += f": {reason}"
    return text


class BulkSender:
    """Posts bulks to ``/<alias>/_bulk``; each request waits at most ``timeout`` seconds.

    With ``dual`` (consumer.dualwrite), while a resync is in progress the same body
    also goes to the resync's alias, at the same time; the item outcomes are merged.
    """

    def __init__(
        self, client: AsyncOpenSearch, alias: str, timeout: float, dual: DualWrite | None = None
    ) -> None:
        self._client = client
        self._alias = alias
        self._params = {**BULK_PARAMS, "request_timeout": timeout}
        self._dual = dual

    async def send(self, changes: Sequence[Change]) -> Sequence[ItemResult]:
        """One result per change, in order. Raises :class:`BulkFailed` (also when only the
        resync's index failed: the retry is harmless to the live index, versions are external)."""
        body = encode_body(changes)
        dual = self._dual
        target = dual.target if dual is not None else None
        if target is None:
            if dual is None:
                return await self._post(body, self._alias, len(changes))
            dual.single_in_flight += 1
            try:
                return await self._post(body, self._alias, len(changes))
            finally:
                dual.single_in_flight -= 1
        live, new = await asyncio.gather(
            self._post(body, self._alias, len(changes)),
            self._post(body, target, len(changes)),
            return_exceptions=True,
        )
        if isinstance(live, BaseException):
            raise live
        if isinstance(new, BaseException):
            if isinstance(new, BulkFailed):
                raise BulkFailed(
                    new.status, f"new index {target} (resync): {new.reason}", tls=new.tls
                )
            raise new
        return merge(live, new, target)

    async def _post(self, body: bytes, index: str, sent: int) -> Sequence[ItemResult]:
        try:
            response = await self._client.bulk(body=body, index=index, params=self._params)
        except TransportError as error:
            tls = isinstance(error, SSLError)
            raise BulkFailed(status_of(error), _describe(error), tls=tls) from None
        try:
            return decode_response(response, sent)
        except BulkResponseError as error:
            raise BulkFailed(None, str(error)) from None

    async def answers(self) -> bool:
        """Whether OpenSearch answers at all (``HEAD /`` within PROBE_TIMEOUT_SECONDS).

        After a request got no answer, this tells "OpenSearch is down" (retry, not
        the request's fault) from "OpenSearch is up but drops this request" (a
        request too large for it: split it, charge a lone item). Any HTTP answer,
        even 401, counts as answering. Never raises.
        """
        try:
            await self._client.transport.perform_request(
                "HEAD", "/", params={"request_timeout": PROBE_TIMEOUT_SECONDS}
            )
        except (OpenSearchConnectionError, ConnectionTimeout):
            return False
        except TransportError:
            return True
        return True
