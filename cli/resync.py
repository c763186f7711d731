"""``searchsync resync [--yes] [--json] [--grace S | --keep-old] [--abort]``: rebuild the
index behind the alias under live load and swap the alias (common.resync says how).

Exit codes: 0 swapped, aborted, or nothing to abort; 1 refused, not confirmed, or
stopped on the way (the phase stays recorded: run it again to resume, or
``--abort``); 2 usage; 3 a service cannot be reached. Ctrl-C stops it with the
result ``interrupted`` (exit 1 when tried; the phase stays recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

from opensearchpy import TransportError

from ..common import resync
from ..common.config import Settings
from ..common.keys import Keys
from ..common.opensearch import make_client, status_of
from ..common.redis_client import connect_redis
from .resync_load import LoadError
from .resync_run import Context, Report, ResyncError, command_lock, execute, gather
from .terminal import EXIT_OK, EXIT_PROBLEM, Progress, confirm, print_json

__all__ = ["register"]

_DONE = {"swapped", "aborted", "nothing"}


def _header(the_plan: resync.Plan, args: argparse.Namespace) -> list[str]:
    record = the_plan.record
    assert record is not None
    if args.abort:
        head = f"searchsync resync --abort will, for resync {record.id} ({record.phase.value}):"
    elif the_plan.resumed:
        head = f"searchsync resync will resume resync {record.id} ({record.phase.value}):"
    else:
        head = f"searchsync resync will rebuild the index behind {record.alias}:"
    lines = resync.describe(the_plan, grace_seconds=args.grace, keep_old=args.keep_old)
    return [head, *lines]


def _plan(
    args: argparse.Namespace, found: tuple[resync.Record | None, resync.Facts], alias: str,
    new_id: str, now_ms: int,
) -> resync.Plan:  # fmt: skip
    record, facts = found
    if args.abort:
        return resync.plan_abort(record, facts, alias=alias)
    return resync.plan(record, facts, alias=alias, new_id=new_id, now_ms=now_ms)


async def _run(
    settings: Settings, args: argparse.Namespace, progress: Progress
) -> tuple[str, str, resync.Plan | None, Report | None]:
    """(outcome, message, plan, report)."""
    alias = settings.os_index_name
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings, socket_timeout=30.0)
    client = make_client(settings)
    new_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
    now_ms = int(time.time() * 1000)
    try:
        the_plan = _plan(args, await gather(redis, client, keys, alias), alias, new_id, now_ms)
        if the_plan.verdict is resync.Verdict.NOTHING:
            return "nothing", the_plan.message, the_plan, None
        if the_plan.verdict is resync.Verdict.REFUSED:
            return "refused", the_plan.message, the_plan, None
        if not (args.yes or confirm(_header(the_plan, args), json_mode=args.json)):
            return "not_confirmed", "not confirmed: nothing was changed", the_plan, None
        report = Report(the_plan.record)
        try:
            async with command_lock(redis, keys, progress) as lock:
                # read again under the lock: another command may have moved it meanwhile
                again = _plan(args, await gather(redis, client, keys, alias), alias, new_id, now_ms)
                if again != the_plan:
                    message = "the resync changed while this command waited: run it again"
                    return "refused", message, again, None
                ctx = Context(
                    settings, redis, client, keys, progress, lock=lock,
                    confirm_timeout=args.confirm_timeout, settle=args.settle,
                    grace_seconds=args.grace, keep_old=args.keep_old,
                )  # fmt: skip
                await execute(ctx, the_plan, report)
        except (ResyncError, LoadError) as error:
            return "stopped", str(error), the_plan, report
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
            message = "interrupted: the phase is recorded; run again to resume, or --abort"
            return "interrupted", message, the_plan, report
        except TransportError as error:
            if status_of(error) is None:
                raise  # no answer: "cannot reach a service", exit 3
            message = f"OpenSearch refused a step: {error}; run again to resume"
            return "stopped", message, the_plan, report
        return ("aborted" if args.abort else "swapped"), "", the_plan, report
    finally:
        progress.done()
        await client.close()
        await redis.aclose()


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _result(outcome: str, message: str, the_plan: resync.Plan | None, report: Report | None,
            alias: str) -> dict[str, Any]:  # fmt: skip
    record = the_plan.record if the_plan else None
    loaded = report.loaded if report else None
    drift = report.drift if report else None
    return {
        "alias": alias,
        "outcome": outcome,
        "ok": outcome in _DONE,
        "resync_id": record.id if record else None,
        "old_index": record.old if record else None,
        "new_index": record.target if record else None,
        "resumed_from": record.phase.value if record and the_plan and the_plan.resumed else None,
        "high_water": report.record.high_water if report and report.record else None,
        "as_of": loaded.as_of if loaded else None,
        "rows": loaded.rows if loaded else None,
        "written": loaded.written if loaded else None,
        "newer_live": loaded.newer if loaded else None,
        "key_violations": loaded.violations if loaded else None,
        "drift": None if drift is None else {
            "view_count": drift.view_count, "index_count": drift.index_count,
            "missing": drift.missing[:20], "extra": drift.extra[:20],
            "different": sorted(drift.different)[:20],
        },
        "not_compared_key_violations": report.skipped[:20] if report else [],
        "seconds": report.seconds if report else {},
        "old_index_deleted_after": _iso(report.retired_until_ms) if report else None,
        "message": message,
    }  # fmt: skip


def _print_human(result: dict[str, Any]) -> None:
    outcome = result["outcome"]
    if outcome == "swapped":
        print(f"alias {result['alias']} -> {result['new_index']} (write index); "
              f"{result['written']} documents loaded at T={result['as_of']}, verified")  # fmt: skip
        kept = result["old_index_deleted_after"]
        print(f"old index {result['old_index']} " + (f"is deleted after {kept}" if kept else
              "is kept (--keep-old): delete it yourself"))  # fmt: skip
        steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result["seconds"].items())
        print(f"steps: {steps}")
    elif outcome == "aborted":
        print(f"resync {result['resync_id']} aborted: {result['new_index']} deleted, consumers "
              f"write to {result['alias']} only; the live index was not touched")  # fmt: skip
    elif outcome == "nothing":
        print(result["message"])
    else:
        print(f"searchsync resync: {result['message']}", file=sys.stderr)


async def cmd_resync(settings: Settings, args: argparse.Namespace) -> int:
    progress = Progress("searchsync resync", every=2.0)
    outcome, message, the_plan, report = await _run(settings, args, progress)
    result = _result(outcome, message, the_plan, report, settings.os_index_name)
    if args.json:
        print_json(result)
    else:
        _print_human(result)
    return EXIT_OK if outcome in _DONE else EXIT_PROBLEM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resync",
        help="rebuild the index as <alias>_v<N+1> under live load, verify it, swap the alias",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print one JSON object (prompts on stderr)")
    p.add_argument(
        "--abort", action="store_true",
        help="abandon the resync in progress: delete the new index, stop dual writes",
    )  # fmt: skip
    p.add_argument(
        "--grace", type=float, default=3600.0, metavar="SECONDS",
        help="keep the old index this long after the swap (default 3600)",
    )  # fmt: skip
    p.add_argument("--keep-old", action="store_true", help="never delete the old index")
    p.add_argument(
        "--confirm-timeout", type=float, default=120.0, metavar="SECONDS",
        help="how long to wait for every live consumer to write to both indexes (default 120)",
    )  # fmt: skip
    p.add_argument(
        "--settle", type=float, default=30.0, metavar="SECONDS",
        help="how long the verify re-reads documents that differ (default 30)",
    )  # fmt: skip
    p.set_defaults(run=cmd_resync)
