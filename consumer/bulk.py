"""The ``_bulk`` request body and the reading of its response.

Pure, no I/O. Documents are the producer's pre-encoded JSON bytes and are copied
into the body as they are, never parsed: only the action lines are built here.
Every action carries ``_id`` = key, ``version`` = ts and
``version_type`` = ``external_gte``, so a replayed or reordered change can never
overwrite a newer document (OpenSearch answers 409, which counts as applied).

The request goes to ``/<alias>/_bulk`` with ``require_alias=true`` (a deleted
alias must not be silently re-created as a dynamically mapped index) and a
``filter_path`` that keeps only what the outcome of each item needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from ..common.entries import Change

__all__ = [
    "ACTION_OVERHEAD_BYTES",
    "BULK_PARAMS",
    "BulkResponseError",
    "ItemResult",
    "action_line",
    "decode_response",
    "encode_body",
    "unsendable_reason",
]

BULK_PARAMS: Final = {
    "filter_path": "errors,items.*.status,items.*.error.type,items.*.error.reason",
    "require_alias": "true",
}

# OpenSearch refuses longer ids (400 on the item); refuse them before sending.
MAX_ID_BYTES: Final = 512
# An action line without its id: {"index":{"_id":"…","version":…,"version_type":…}}
ACTION_OVERHEAD_BYTES: Final = 80

_INDEX: Final = b'{"index":{"_id":'
_DELETE: Final = b'{"delete":{"_id":'
_VERSION: Final = b',"version":'
_TAIL: Final = b',"version_type":"external_gte"}}\n'
_NEWLINE: Final = b"\n"
# Anything that needs escaping (or UTF-8 validation) inside a JSON string.
_NEEDS_CARE: Final = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


class BulkResponseError(ValueError):
    """The response does not describe one outcome per item that was sent."""


class _Error(msgspec.Struct):
    type: str = ""
    reason: str | None = None


class _Outcome(msgspec.Struct):
    status: int
    error: _Error | None = None


class _Response(msgspec.Struct):
    errors: bool = False
    items: list[dict[str, _Outcome]] = []


class ItemResult(msgspec.Struct, frozen=True):
    """What OpenSearch said about one action."""

    status: int
    error_type: str = ""
    reason: str = ""


_APPLIED: Final = ItemResult(200)
_RESPONSE_DECODER: Final = msgspec.json.Decoder(_Response)


def _json_string(key: bytes) -> bytes:
    if _NEEDS_CARE.search(key) is None:
        return b'"' + key + b'"'
    return msgspec.json.encode(key.decode())  # UnicodeDecodeError for invalid UTF-8


def unsendable_reason(change: Change) -> str | None:
    """Why ``change`` cannot be put into a ``_bulk`` body at all, or None.

    A raw newline in a document would split it into two NDJSON lines and make
    OpenSearch reject the whole request; an id must be valid UTF-8 and at most
    512 bytes.
    """
    if len(change.key) > MAX_ID_BYTES:
        return f"key is {len(change.key)} bytes, OpenSearch ids are at most {MAX_ID_BYTES}"
    if _NEEDS_CARE.search(change.key) is not None:
        try:
            change.key.decode()
        except UnicodeDecodeError:
            return "key is not valid UTF-8"
    if change.doc is not None:
        if not change.doc:
            return "document is empty"
        if _NEWLINE in change.doc:
            return "document contains a raw newline (not valid in an NDJSON _bulk body)"
    return None


def action_line(change: Change) -> bytes:
    """The action line (with its newline) for ``change``: index for upserts, delete for deletes."""
    head = _DELETE if change.doc is None else _INDEX
    return head + _json_string(change.key) + _VERSION + str(change.ts).encode() + _TAIL


def encode_body(changes: Iterable[Change]) -> bytes:
    """The NDJSON body for ``changes``, in order; document bytes are copied unparsed.

    Callers must have filtered with :func:`unsendable_reason` first.
    """
    parts: list[bytes] = []
    append = parts.append
    for change in changes:
        append(action_line(change))
        if change.doc is not None:
            append(change.doc)
            append(_NEWLINE)
    return b"".join(parts)


def decode_response(payload: bytes | Mapping[str, Any], sent: int) -> Sequence[ItemResult]:
    """One :class:`ItemResult` per action, in request order.

    ``payload`` is the body of a 200 response to a request holding ``sent``
    actions, raw or as parsed by the client. Raises :class:`BulkResponseError` if
    it cannot be read or holds a different number of items.
    """
    try:
        if isinstance(payload, bytes):
            response = _RESPONSE_DECODER.decode(payload)
        else:
            response = msgspec.convert(payload, _Response)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise BulkResponseError(f"unreadable _bulk response: {error}") from None
    if len(response.items) != sent:
        raise BulkResponseError(f"_bulk response lists {len(response.items)} items for {sent}")
    if not response.errors:
        return [_APPLIED] * sent
    results: list[ItemResult] = []
    for item in response.items:
        if len(item) != 1:
            raise BulkResponseError(f"_bulk item has {len(item)} actions")
        (outcome,) = item.values()
        if outcome.error is None:
            results.append(ItemResult(outcome.status))
        else:
            results.append(
                ItemResult(outcome.status, outcome.error.type, outcome.error.reason or "")
            )
    return results
