"""``searchsync status [--json] [--view V]``: per partition length, lag, pending, owner,
applied-through ts and freshness (common.status does the reading and arithmetic); every
view of the views file, one after the other, when it lists several and --view is not given."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..common import status as status_report
from ..common.config import Settings
from ..common.keys import Keys
from ..common.redis_client import connect_redis
from .terminal import EXIT_OK, print_json

__all__ = ["register", "status_of_views"]


async def report_of(settings: Settings) -> status_report.Status:
    """The status report of one view (one Redis connection, socket timeout 5 s)."""
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings, socket_timeout=5.0)
    try:
        raw = await status_report.gather(redis, keys, settings.consumer_group)
    finally:
        await redis.aclose()
    return status_report.build(
        raw,
        keys,
        view=settings.view_name,
        group=settings.consumer_group,
        now_ms=status_report.now_ms(),
        member_ttl_ms=int(settings.lease_ttl_seconds * 1000),
    )


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    report = await report_of(settings)
    if args.json:
        print_json(report)
    else:
        print(status_report.render(report))
    return EXIT_OK


async def status_of_views(views: Sequence[Settings], args: argparse.Namespace) -> int:
    """``searchsync status`` without --view when the views file lists several: every
    view's report, one after the other (``--json``: ``{"views": [report, …]}``)."""
    reports = [await report_of(view) for view in views]
    if args.json:
        print_json({"views": reports})
    else:
        print("\n\n".join(status_report.render(report) for report in reports))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="per-partition state of the streams")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_status)
