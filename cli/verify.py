"""``searchsync verify [--json] [--settle S]``: the view against the index, counts
and every document; exit 1 on drift (common.verify reads and compares)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..common.config import Settings
from ..common.materialize import connect
from ..common.opensearch import make_client
from ..common.verify import Drift, compare, read_index, read_view
from .terminal import EXIT_OK, EXIT_PROBLEM, print_json

__all__ = ["register"]


async def _read_both(
    settings: Settings, keys: list[str] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    conn = await connect(settings, application_name="searchsync-cli")
    client = make_client(settings)
    try:
        view = await read_view(conn, settings.view_name, settings.key_column, keys)
        index = await read_index(client, settings.os_index_name, settings.key_column, keys)
    finally:
        await conn.close()
        await client.close()
    return view, index


async def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    view, index = await _read_both(settings, None)
    drift = compare(view, index)
    first = len(drift.keys)
    # Changes in flight settle: re-read only the keys that differ, a few times.
    waited = 0.0
    while not drift.ok and waited < args.settle:
        await asyncio.sleep(1.0)
        waited += 1.0
        suspects = sorted(drift.keys)
        view_part, index_part = await _read_both(settings, suspects)
        recheck = compare(view_part, index_part)
        drift = Drift(
            view_count=drift.view_count,
            index_count=drift.index_count,
            missing=recheck.missing,
            extra=recheck.extra,
            different=recheck.different,
        )
    if args.json:
        print_json(
            {
                "ok": drift.ok,
                "view_count": drift.view_count,
                "index_count": drift.index_count,
                "differing_at_first_read": first,
                "missing": drift.missing,
                "extra": drift.extra,
                "different": {k: list(v) for k, v in drift.different.items()},
            }
        )
    else:
        print(
            f"view {settings.view_name}: {drift.view_count} rows; index "
            f"{settings.os_index_name}: {drift.index_count} documents; "
            f"{first} differed at first read, {len(drift.keys)} after settling"
        )
        for key in drift.missing[:20]:
            print(f"  missing in index: {key}")
        for key in drift.extra[:20]:
            print(f"  only in index:    {key}")
        for key, fields in list(drift.different.items())[:20]:
            print(f"  different:        {key} {sorted(fields)}")
        print("OK: index matches the view" if drift.ok else "DRIFT: index differs from the view")
    return EXIT_OK if drift.ok else EXIT_PROBLEM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="compare the view with the index; exit 1 on drift")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to keep re-reading keys that differ (changes in flight), default 10",
    )
    p.set_defaults(run=cmd_verify)
