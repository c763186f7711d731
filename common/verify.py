"""View vs index: do the documents in OpenSearch say what the view says?

:func:`compare` is pure: it takes the view's rows and the index's ``_source``
documents, both as plain dicts keyed by the view's key, and lists what is
missing, extra or different. Values are compared by meaning, not by bytes: a
``numeric`` 12.50 equals the JSON number 12.5, a ``timestamptz`` equals the
same instant written in ISO 8601 with any offset. The version field is ignored.

:func:`read_view` and :func:`read_index` are the I/O edges; ``searchsync
verify`` (cli.verify) runs them, compares, re-reads only the keys that differ
(changes in flight settle within seconds), and exits non-zero on drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from opensearchpy import AsyncOpenSearch
from psycopg import sql

from .entries import VERSION_FIELD

__all__ = ["Drift", "compare", "normalize", "read_index", "read_view"]

Document = Mapping[str, Any]


@dataclass(slots=True)
class Drift:
    """Keys whose document differs between the view and the index."""

    view_count: int = 0
    index_count: int = 0
    missing: list[str] = field(default_factory=list)  # in the view, not in the index
    extra: list[str] = field(default_factory=list)  # in the index, not in the view
    different: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return {*self.missing, *self.extra, *self.different}

    @property
    def ok(self) -> bool:
        return not self.keys


def normalize(value: Any) -> Any:
    """One comparable form per meaning: numbers as float, instants as aware datetimes."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in "T ":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _differences(view_doc: Document, index_doc: Document) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for name in view_doc.keys() | index_doc.keys():
        if name == VERSION_FIELD:
            continue
        left, right = view_doc.get(name), index_doc.get(name)
        if normalize(left) != normalize(right):
            out[name] = (left, right)
    return out


def compare(view: Mapping[str, Document], index: Mapping[str, Document]) -> Drift:
    """Every key of either side, classified; ``Drift.ok`` when nothing differs."""
    drift = Drift(view_count=len(view), index_count=len(index))
    for key, view_doc in view.items():
        index_doc = index.get(key)
        if index_doc is None:
            drift.missing.append(key)
            continue
        diff = _differences(view_doc, index_doc)
        if diff:
            drift.different[key] = diff
    drift.extra = [key for key in index if key not in view]
    drift.missing.sort()
    drift.extra.sort()
    return drift


async def read_view(
    conn: psycopg.AsyncConnection[Any],
    view: str,
    key_column: str,
    keys: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The view's rows as ``{key: {column: value}}``, all of them or only ``keys``.

    ``conn`` is a Materialize connection with the cluster already set. A key with
    several live rows (a key violation) keeps the last one read; compare() then
    reports whichever differs. Raises psycopg.Error.
    """
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(view))
    params: tuple[Any, ...] = ()
    if keys is not None:
        query = sql.SQL("{} WHERE {} = ANY(%s)").format(query, sql.Identifier(key_column))
        params = (list(keys),)
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        names = [column.name for column in cur.description or ()]
        rows = await cur.fetchall()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        doc = dict(zip(names, row, strict=True))
        out[str(doc[key_column])] = doc
    return out


async def read_index(
    client: AsyncOpenSearch,
    index: str,
    key_field: str,
    keys: Iterable[str] | None = None,
    page: int = 5000,
) -> dict[str, dict[str, Any]]:
    """``{_id: _source}`` of every document of ``index`` (an alias works), or of ``keys``.

    Pages with ``search_after`` on ``key_field`` (a keyword field holding the same
    value as ``_id``; no scroll context to clean up, no fielddata on ``_id``).
    Raises opensearchpy exceptions (NotFoundError if the index does not exist).
    """
    out: dict[str, dict[str, Any]] = {}
    if keys is not None:
        wanted = list(keys)
        for start in range(0, len(wanted), page):
            response = await client.mget(index=index, body={"ids": wanted[start : start + page]})
            for doc in response["docs"]:
                if doc.get("found"):
                    out[doc["_id"]] = doc["_source"]
        return out
    search_after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": page,
            "sort": [{key_field: "asc"}],
            "query": {"match_all": {}},
        }
        if search_after is not None:
            body["search_after"] = search_after
        response = await client.search(index=index, body=body)
        hits = response["hits"]["hits"]
        for hit in hits:
            out[hit["_id"]] = hit["_source"]
        if len(hits) < page:
            return out
        search_after = hits[-1]["sort"]
