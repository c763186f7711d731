"""Sending one ``_bulk`` request through the shared AsyncOpenSearch client.

The body is built from the producer's document bytes (consumer.bulk); the client
is opensearch-py's AsyncOpenSearch (see common.opensearch for why not raw
aiohttp). Whole-request failures become :class:`BulkFailed` with the HTTP status
(None when nothing was answered), which consumer.outcomes turns into a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

from opensearchpy import AsyncOpenSearch, ConnectionTimeout, TransportError
from opensearchpy import ConnectionError as OpenSearchConnectionError

from common.entries import Change
from common.opensearch import status_of
from consumer.bulk import BULK_PARAMS, BulkResponseError, ItemResult, decode_response, encode_body
from consumer.outcomes import RequestVerdict, classify_request

__all__ = ["BulkFailed", "BulkSender"]


class BulkFailed(Exception):
    """The request as a whole failed; no item outcome is known."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    @property
    def verdict(self) -> RequestVerdict:
        return classify_request(self.status)


def _describe(error: TransportError) -> str:
    if isinstance(error, ConnectionTimeout):
        return "timeout"
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
    """Posts bulks to ``/<alias>/_bulk``; each request waits at most ``timeout`` seconds."""

    def __init__(self, client: AsyncOpenSearch, alias: str, timeout: float) -> None:
        self._client = client
        self._alias = alias
        self._params = {**BULK_PARAMS, "request_timeout": timeout}

    async def send(self, changes: Sequence[Change]) -> Sequence[ItemResult]:
        """One result per change, in order. Raises :class:`BulkFailed`."""
        body = encode_body(changes)
        try:
            response = await self._client.bulk(body=body, index=self._alias, params=self._params)
        except TransportError as error:
            raise BulkFailed(status_of(error), _describe(error)) from None
        try:
            return decode_response(response, len(changes))
        except BulkResponseError as error:
            raise BulkFailed(None, str(error)) from None
