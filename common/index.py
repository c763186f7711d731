"""The index searchsync writes to: its mapping, its settings, and the alias in front of it.

Writers always address the alias OS_INDEX_NAME; the concrete index behind it is
``<alias>_v<N>``, so a resync (DESIGN.md's ``searchsync resync``, not built yet)
can build ``_v<N+1>`` and swap the alias with no downtime. :func:`ensure_index` is
what a consumer runs at start and what ``searchsync index create`` runs.

Mapping choices: every column of the view is mapped explicitly with the
runbook's types; free text that people also sort or aggregate on (names) gets a
``keyword`` sub-field; ``dynamic: false`` keeps a column added to the view later in
``_source`` without letting OpenSearch guess its type (a guess can reject every
later document). ``sync_version`` (long) is the version every document carries, so
a reconcile can delete by version. ``refresh_interval`` is set explicitly: an
index left at the default stops refreshing while it gets no searches ("search
idle"), and the first search after a quiet spell then waits for a refresh.
``index.gc_deletes`` keeps delete tombstones (with their versions) at least as long
as the streams keep entries, so replaying an old upsert cannot resurrect a
document deleted at a newer version.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from opensearchpy import AsyncOpenSearch, NotFoundError, RequestError

from common.entries import VERSION_FIELD

__all__ = [
    "VIEW_PROPERTIES",
    "ensure_index",
    "index_body",
    "versioned_name",
]

log = logging.getLogger(__name__)

_KEYWORD: Final = {"type": "keyword"}
_DATE: Final = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
_TEXT: Final = {"type": "text"}
# text people also sort and aggregate on
_TEXT_SORTABLE: Final = {
    "type": "text",
    "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
}

# The 18 columns of orders_search_source_mv (runbook §5), typed as in runbook §4.
VIEW_PROPERTIES: Final[dict[str, dict[str, Any]]] = {
    "order_id": _KEYWORD,
    "order_number": _KEYWORD,
    "order_status": _KEYWORD,
    "store_id": _KEYWORD,
    "customer_id": _KEYWORD,
    "delivery_window_start": _DATE,
    "delivery_window_end": _DATE,
    "order_total_amount": {"type": "float"},
    "customer_name": _TEXT_SORTABLE,
    "customer_email": _KEYWORD,
    "customer_address": _TEXT,
    "store_name": _TEXT_SORTABLE,
    "store_zone": _KEYWORD,
    "store_address": _TEXT,
    "assigned_courier_id": _KEYWORD,
    "delivery_task_status": _KEYWORD,
    "delivery_eta": _DATE,
    "effective_updated_at": _DATE,
    VERSION_FIELD: {"type": "long"},
}


def versioned_name(alias: str, generation: int = 1) -> str:
    """The concrete index behind ``alias``: ``<alias>_v<generation>``."""
    return f"{alias}_v{generation}"


def index_body(
    *,
    retention_seconds: int,
    replicas: int = 0,
    shards: int = 1,
    refresh_interval: str = "1s",
) -> dict[str, Any]:
    """Settings and mapping for a new index.

    ``retention_seconds`` is STREAM_RETENTION_SECONDS: delete tombstones are kept
    at least that long. ``replicas`` 0 suits a single node; use 1+ on a cluster.
    """
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
                "gc_deletes": f"{retention_seconds}s",
            }
        },
        "mappings": {"dynamic": "false", "properties": VIEW_PROPERTIES},
    }


async def _alias_targets(client: AsyncOpenSearch, alias: str) -> list[str]:
    # HEAD first: the client logs every failed GET as a WARNING, and "no alias yet" is normal
    if not await client.indices.exists_alias(name=alias):
        return []
    try:
        found = await client.indices.get_alias(name=alias)
    except NotFoundError:  # removed between the two requests
        return []
    return sorted(found)


async def ensure_index(
    client: AsyncOpenSearch,
    alias: str,
    *,
    retention_seconds: int,
    replicas: int = 0,
    refresh_interval: str = "1s",
) -> str:
    """Make sure ``alias`` points at an index; create ``<alias>_v1`` behind it if not.

    Returns the name writes land in. Safe to run from several processes at once
    (creation and alias addition are idempotent). A concrete index named like the
    alias (made by hand, as in the runbook's force resync) is used as it is, with a
    WARNING. Raises opensearchpy.TransportError subclasses when OpenSearch refuses
    or cannot be reached (each request waits at most the client's timeout).
    """
    targets = await _alias_targets(client, alias)
    if targets:
        return targets[0]
    if await client.indices.exists(index=alias):
        log.warning(
            "Index %s is a concrete index, not an alias: writing to it as it is "
            "(create it with `searchsync index create` to get the alias and mapping)",
            alias,
        )
        return alias
    name = versioned_name(alias)
    body = index_body(
        retention_seconds=retention_seconds, replicas=replicas, refresh_interval=refresh_interval
    )
    try:
        await client.indices.create(index=name, body=body)
        log.info("Created index %s", name)
    except RequestError as error:
        if error.error != "resource_already_exists_exception":
            raise
    await client.indices.update_aliases(
        body={"actions": [{"add": {"index": name, "alias": alias}}]}
    )
    log.info("Alias %s points at %s", alias, name)
    return name
