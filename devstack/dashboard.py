"""The demo's live view: per partition events/s, buffer, lag and freshness, and the
orders synced last, redrawn every second while the load runs (rich).

:func:`frame` and :func:`render` are pure (unit-tested without services); :func:`live`
reads Redis (common.status, the same reads as ``searchsync status``) and OpenSearch
(``_search`` sorted by ``sync_version``: what a user's search sees, not GET by id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opensearchpy import AsyncOpenSearch, NotFoundError, TransportError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from searchsync.common import status as status_report
from searchsync.common.keys import Keys
from searchsync.common.status import Status

__all__ = ["Frame", "SyncedOrder", "frame", "latest_orders", "live", "rates", "render"]

LATEST = 8


@dataclass(frozen=True, slots=True)
class SyncedOrder:
    """One order as ``_search`` returns it: what changed, and when Materialize saw it."""

    order_number: str
    order_status: str
    customer_name: str
    sync_version: int  # the Materialize timestamp (ms) of the change indexed

    def search_command(self, base_url: str, index: str) -> str:
        return f"curl -s '{base_url}/{index}/_search?q=order_number:{self.order_number}&pretty'"


@dataclass(frozen=True, slots=True)
class PartitionRow:
    partition: int
    owner: str | None
    events_per_s: float
    buffer: int
    lag: int | None
    freshness_seconds: float | None
    blocked: bool


@dataclass(frozen=True, slots=True)
class Frame:
    rows: list[PartitionRow]
    events_per_s: float
    buffer: int
    consumers: int
    dlq: int
    checkpoint_age_seconds: float | None
    latest: list[SyncedOrder]
    now_ms: int


def rates(
    before: Mapping[bytes, bytes], after: Mapping[bytes, bytes], partitions: int, seconds: float
) -> list[float]:
    """Changes acknowledged per second per partition between two reads of ``counts``.

    A counter that went down (state cleared, Redis restarted without it) counts 0.
    """
    out: list[float] = []
    for n in range(partitions):
        field = Keys.acked_field(n).encode()
        delta = int(after.get(field, 0)) - int(before.get(field, 0))
        out.append(max(delta, 0) / seconds if seconds > 0 else 0.0)
    return out


def frame(status: Status, per_second: list[float], latest: list[SyncedOrder], now_ms: int) -> Frame:
    rows = [
        PartitionRow(
            partition=p.partition,
            owner=p.owner,
            events_per_s=per_second[p.partition] if p.partition < len(per_second) else 0.0,
            buffer=p.buffer,
            lag=p.lag,
            freshness_seconds=p.freshness_seconds,
            blocked=p.blocked is not None,
        )
        for p in status.partitions
    ]
    return Frame(
        rows=rows,
        events_per_s=sum(r.events_per_s for r in rows),
        buffer=status.buffer,
        consumers=len(status.members),
        dlq=status.dlq_length,
        checkpoint_age_seconds=status.checkpoint_age_seconds,
        latest=latest,
        now_ms=now_ms,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def render(view: str, f: Frame) -> Group:
    """The dashboard: a header line, the partitions, the orders synced last."""
    header = Text(
        f"{view}: {f.events_per_s:,.0f} events/s  buffer {f.buffer:,} changes  "
        f"consumers {f.consumers}  dead letters {f.dlq}  "
        f"checkpoint {_seconds(f.checkpoint_age_seconds)} ago   (Ctrl-C stops)",
        style="bold",
    )
    parts = Table(title="partitions", title_justify="left", expand=False)
    for name, justify in (
        ("partition", "left"),
        ("owner", "left"),
        ("events/s", "right"),
        ("buffer", "right"),
        ("lag", "right"),
        ("freshness", "right"),
    ):
        parts.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in f.rows:
        parts.add_row(
            f"p{r.partition}",
            (r.owner or "-") + (" BLOCKED" if r.blocked else ""),
            f"{r.events_per_s:,.0f}",
            f"{r.buffer:,}",
            "-" if r.lag is None else f"{r.lag:,}",
            _seconds(r.freshness_seconds),
            style="red" if r.blocked else None,
        )
    orders = Table(title="synced last (through _search)", title_justify="left")
    for name in ("order", "status", "customer", "changed"):
        orders.add_column(name)
    for o in f.latest:
        orders.add_row(
            o.order_number,
            o.order_status,
            o.customer_name,
            f"{max(f.now_ms - o.sync_version, 0) / 1000:.1f}s ago",
        )
    return Group(header, parts, orders)


def _text(source: Mapping[str, Any], field: str) -> str:
    value = source.get(field)
    return "-" if value is None else str(value)


async def latest_orders(client: AsyncOpenSearch, index: str, n: int = LATEST) -> list[SyncedOrder]:
    """The ``n`` documents with the highest ``sync_version``, as ``_search`` sees them now."""
    try:
        found = await client.search(
            index=index,
            body={
                "size": n,
                "sort": [{"sync_version": "desc"}],
                "_source": ["order_number", "order_status", "customer_name", "sync_version"],
            },
        )
    except NotFoundError:
        return []
    out: list[SyncedOrder] = []
    for hit in found["hits"]["hits"]:
        source = hit["_source"]
        out.append(
            SyncedOrder(
                order_number=_text(source, "order_number"),
                order_status=_text(source, "order_status"),
                customer_name=_text(source, "customer_name"),
                sync_version=int(source.get("sync_version") or 0),
            )
        )
    return out


async def live(
    redis: Redis,
    client: AsyncOpenSearch,
    keys: Keys,
    *,
    view: str,
    group: str,
    index: str,
    member_ttl_ms: int,
    until: Callable[[], bool],
    console: Console | None = None,
) -> list[SyncedOrder]:
    """Redraw the dashboard every second until ``until()``; the last orders seen.

    Each redraw reads Redis (two pipelined round trips) and runs one ``_search``;
    a read that fails leaves the previous frame on screen (the pipeline's own
    reconnects are what the demo shows, not the dashboard's).
    """
    console = console or Console()
    before = (await status_report.gather(redis, keys, group)).counts
    last_read = time.monotonic()
    latest: list[SyncedOrder] = []
    with Live(console=console, refresh_per_second=4, transient=False) as screen:
        while not until():
            await asyncio.sleep(1.0)
            try:
                raw = await status_report.gather(redis, keys, group)
                latest = await latest_orders(client, index)
            except (OSError, TransportError, RedisError):
                continue
            now = time.monotonic()
            now_ms = status_report.now_ms()
            report = status_report.build(
                raw, keys, view=view, group=group, now_ms=now_ms, member_ttl_ms=member_ttl_ms
            )
            per_second = rates(before, raw.counts, keys.partitions, now - last_read)
            before, last_read = raw.counts, now
            screen.update(render(report.view, frame(report, per_second, latest, now_ms)))
    return latest
