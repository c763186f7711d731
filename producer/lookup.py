"""Some keys' current rows, read at one Materialize timestamp, as the producer encodes them.

What ``searchsync dlq retry`` writes instead of a dead letter's stale document. One
read is one subscription, as Materialize documents it::

    BEGIN
    DECLARE searchsync_lookup CURSOR FOR SUBSCRIBE
        (SELECT * FROM <view> WHERE <key> IN (<keys>)) WITH (PROGRESS, SNAPSHOT = true)
    FETCH <n> searchsync_lookup      -- until the snapshot is complete
    ROLLBACK

With ``PROGRESS`` the first row is a progress row at the subscription's ``AS OF``
(Materialize 0.50 on), the snapshot's rows all carry that timestamp, and a
progress row above it says the snapshot is complete. So the rows come with the
exact timestamp they were read at, which becomes their version: a change made
after it reaches the streams at a later timestamp and wins in OpenSearch. A plain
``SELECT`` would not say its timestamp, and ``SELECT mz_now()`` in the same
read transaction must come second in Materialize (the first query fixes the
transaction's timestamp and time domain) while the emulator answers it with
its newest timestamp, which may be newer than what the ``SELECT`` read.

Documents are encoded by :class:`producer.documents.DocumentEncoder` from the
rows a SUBSCRIBE returns, with the producer's text loaders: the bytes the live
path would write for the same row at the same timestamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from ..common import materialize
from ..common.config import Settings
from .documents import DocumentEncoder, kind_of_type, register_text_loaders
from .rows import FIRST_VALUE, Layout, Progress, Rejected, Row, parse_rows

__all__ = [
    "LOOKUP_TIMEOUT_SECONDS",
    "CurrentRows",
    "SnapshotFold",
    "connect",
    "lookup_statement",
    "read_current",
]

CURSOR: Final = "searchsync_lookup"
_FETCH_ROWS: Final = 1000
# A snapshot of a few hundred keys; Materialize answers within a tick or two.
LOOKUP_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class CurrentRows:
    """The live rows of the keys asked for, at Materialize timestamp ``ts``.

    ``docs[key]`` holds one document (encoded at version ``ts``) per live row of
    ``key``: none when the key has no row, several when the view breaks its key.
    Every key asked for is in ``docs``.
    """

    ts: int
    docs: dict[str, list[bytes]]


@dataclass
class SnapshotFold:
    """Pure fold of a subscription's first rows into its snapshot (no I/O).

    :meth:`add` takes parsed events in order and returns True once the snapshot
    is complete (a progress row above ``as_of``). Rows above ``as_of`` are changes
    after the read and are ignored; ``counts`` holds each live row's multiplicity.
    """

    as_of: int | None = None
    complete: bool = False
    counts: dict[str, dict[tuple[object, ...], int]] = field(default_factory=dict)

    def add(self, events: Sequence[Any]) -> bool:
        for event in events:
            if self.complete:
                break
            if isinstance(event, Progress):
                if self.as_of is None:
                    self.as_of = event.ts
                elif event.ts > self.as_of:
                    self.complete = True
                continue
            ts, key, diff, values = event
            if self.as_of is None:
                self.as_of = ts
            if ts != self.as_of:
                continue
            rows = self.counts.setdefault(key, {})
            rows[values] = rows.get(values, 0) + diff
        return self.complete

    def live_rows(self, key: str) -> list[tuple[object, ...]]:
        """The rows of ``key`` at ``as_of``, each repeated as often as it lives."""
        out: list[tuple[object, ...]] = []
        for values, count in self.counts.get(key, {}).items():
            out.extend([values] * max(count, 0))
        return out


def lookup_statement(view: str, key_column: str, keys: Sequence[str]) -> sql.Composed:
    """The DECLARE of a subscription to ``keys``' rows of ``view``. Raises ValueError
    without keys."""
    if not keys:
        raise ValueError("a lookup needs at least one key")
    return sql.SQL(
        "DECLARE {} CURSOR FOR SUBSCRIBE (SELECT * FROM {} WHERE {} IN ({})) "
        "WITH (PROGRESS, SNAPSHOT = true)"
    ).format(
        sql.Identifier(CURSOR),
        sql.Identifier(view),
        sql.Identifier(key_column),
        sql.SQL(", ").join(sql.Literal(key) for key in keys),
    )


async def connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    """A Materialize connection with the producer's loaders (numeric/timestamps as text).

    Raises psycopg.OperationalError when Materialize is unreachable.
    """
    conn = await materialize.connect(settings, application_name="searchsync-dlq")
    register_text_loaders(conn.adapters)
    return conn


async def read_current(
    conn: psycopg.AsyncConnection[Any],
    *,
    view: str,
    key_column: str,
    keys: Sequence[str],
    within_seconds: float = LOOKUP_TIMEOUT_SECONDS,
) -> CurrentRows:
    """``keys``' live rows of ``view`` at one Materialize timestamp (module docstring).

    ``conn`` must be idle and autocommit (:func:`connect`); it is idle again
    afterwards. Raises TimeoutError when the snapshot is not complete within
    ``within_seconds`` (the connection is then closed), psycopg.Error as
    Materialize reports it, producer.rows.LayoutError for unexpected columns.
    """
    fold = SnapshotFold()
    encoder: DocumentEncoder | None = None
    layout: Layout | None = None
    rejected: list[Rejected] = []
    fetch = sql.SQL("FETCH {} {}").format(sql.Literal(_FETCH_ROWS), sql.Identifier(CURSOR))
    try:
        async with asyncio.timeout(within_seconds):
            await conn.execute("BEGIN")
            await conn.execute(lookup_statement(view, key_column, keys))
            while not fold.complete:
                cursor = await conn.execute(fetch)
                if layout is None:
                    description = cursor.description or []
                    names = [column.name for column in description]
                    layout = Layout.from_columns(names, "diffs", key_column)
                    kinds = [kind_of_type(c.type_code) for c in description[FIRST_VALUE:]]
                    encoder = DocumentEncoder(layout.columns, kinds)
                rows: list[Row] = await cursor.fetchall()
                fold.add(parse_rows(layout, rows, rejected))
        await conn.execute("ROLLBACK")
    except TimeoutError:
        await conn.close()
        raise TimeoutError(
            f"Materialize did not complete the snapshot of {len(keys)} keys of {view} "
            f"within {within_seconds:g} s"
        ) from None
    assert encoder is not None and fold.as_of is not None
    ts = fold.as_of
    docs = {key: [encoder.encode(row, ts) for row in fold.live_rows(key)] for key in keys}
    return CurrentRows(ts, docs)
