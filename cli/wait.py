"""``searchsync wait --ts <Materialize ts> | --now [--timeout S] [--json]``: read-your-writes.

Returns once every change at or below the timestamp is applied on every partition
and searchable (common.readyourwrites says how that is decided). ``--now`` takes
the view's current timestamp from Materialize (``SELECT mz_now()``: the logical
time a query of the view would read at). Exit codes: 0 searchable, 1 timed out
(the output names the partitions behind and by how much, or the missing refresh),
2 bad usage.
"""

from __future__ import annotations

import argparse

from ..common.config import Settings
from ..common.keys import Keys
from ..common.materialize import connect
from ..common.opensearch import make_client
from ..common.readyourwrites import WaitResult, wait_searchable
from ..common.redis_client import connect_redis
from .terminal import EXIT_OK, EXIT_PROBLEM, print_json

__all__ = ["register", "view_now"]


async def view_now(settings: Settings) -> int:
    """The view's current Materialize timestamp (``SELECT mz_now()``). One connection,
    at most CONNECT_TIMEOUT_SECONDS to connect. Raises psycopg.Error."""
    conn = await connect(settings, application_name="searchsync-wait")
    try:
        cursor = await conn.execute("SELECT mz_now()::text")
        row = await cursor.fetchone()
    finally:
        await conn.close()
    assert row is not None
    return int(row[0])


def render(result: WaitResult) -> str:
    """The human form of a result."""
    if result.ok:
        return (
            f"OK: every change at or below ts {result.ts} is searchable "
            f"(waited {result.waited_seconds:.2f}s, refresh {result.refresh})"
        )
    lines = [f"TIMEOUT after {result.waited_seconds:.1f}s waiting for ts {result.ts}:"]
    for behind in result.behind:
        if behind.applied_ts is None:
            lines.append(f"  p{behind.partition}: no applied frontier yet")
        else:
            lines.append(
                f"  p{behind.partition}: applied through {behind.applied_ts}, "
                f"{behind.behind_ms} ms behind"
            )
    if not result.behind:
        lines.append("  every partition is applied; no refresh of the index has happened since")
    return "\n".join(lines)


async def cmd_wait(settings: Settings, args: argparse.Namespace) -> int:
    ts = args.ts if args.ts is not None else await view_now(settings)
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings, socket_timeout=5.0)
    client = make_client(settings, maxsize=2)
    try:
        result = await wait_searchable(
            redis, client, keys, settings.os_index_name, ts, timeout_seconds=args.timeout
        )
    finally:
        await redis.aclose()
        await client.close()
    if args.json:
        print_json(result)
    else:
        print(render(result))
    return EXIT_OK if result.ok else EXIT_PROBLEM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "wait", help="wait until a Materialize timestamp is searchable (read-your-writes)"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ts", type=int, help="a Materialize timestamp (ms)")
    which.add_argument(
        "--now", action="store_true", help="the view's current timestamp (SELECT mz_now())"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before giving up, default 30"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_wait)
