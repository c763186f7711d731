"""``searchsync replay --since <ISO time | Materialize ts | entry id> [--partition N]
[--yes] [--json]``: re-deliver retained entries to the consumer group (consumer.replay
plans, counts and moves the group; see its docstring for why this is safe).

Prints the plan (entries and changes per partition), asks for confirmation unless
``--yes``, then moves each partition's group back. Exit codes: 0 replayed (or
nothing to replay), 1 refused (``--since`` older than retention: run ``searchsync
resync``) or not confirmed, 2 a bad ``--since``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ..common.config import Settings
from ..common.keys import Keys
from ..common.redis_client import connect_redis
from ..consumer.replay import (
    ApplyError,
    PartitionPlan,
    Since,
    SinceError,
    apply_plan,
    format_id,
    parse_since,
    plan_partition,
)
from .terminal import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Progress, confirm, print_json

__all__ = ["SAFETY", "register"]

SAFETY = (
    "Replays are safe: every document is written with its Materialize timestamp as an "
    "external version (version_type=external_gte), so a replayed older change never "
    "overwrites a newer document, and a delete's tombstone (kept index.gc_deletes = "
    "STREAM_RETENTION_SECONDS) keeps an older upsert from bringing a deleted document "
    "back. The applied frontier never moves back, and the buffer counts the replayed "
    "changes."
)


def _row(plan: PartitionPlan) -> dict[str, Any]:
    return {
        "partition": plan.partition,
        "first": format_id(plan.first) if plan.first else None,
        "through": format_id(plan.through) if plan.through else None,
        "setid": format_id(plan.setid) if plan.setid else None,
        "entries": plan.entries,
        "changes": plan.changes,
        "above_high_water": plan.above_high_water,
        "refused": plan.refused,
    }


def _table(plans: list[PartitionPlan]) -> list[str]:
    head = f"{'from entry':>22}{'through entry':>22}{'entries':>9}{'changes':>9}"
    lines = [f"{'partition':<10}{head}"]
    for plan in plans:
        first = format_id(plan.first) if plan.first else "-"
        through = format_id(plan.through) if plan.through else "-"
        lines.append(
            f"{'p' + str(plan.partition):<10}{first:>22}{through:>22}"
            f"{plan.entries:>9}{plan.changes:>9}"
        )
    entries = sum(p.entries for p in plans)
    changes = sum(p.changes for p in plans)
    lines.append(f"{'total':<10}{'':>44}{entries:>9}{changes:>9}")
    above = sum(p.above_high_water for p in plans)
    if above:
        lines.append(
            f"{above} entries are above the producer's high-water mark (written by hand): "
            "they will be dead-lettered again"
        )
    return lines


def _describe(since: Since) -> str:
    if since.kind == "ts":
        return f"Materialize ts {since.ts} (first entry with ts >= it, per partition)"
    assert since.position is not None
    return f"{since.text} (entry id {format_id(since.position)})"


@dataclass(slots=True)
class _Run:
    """One replay: what was asked, the plans, how to print."""

    header: str
    since: Since
    plans: list[PartitionPlan]
    json_mode: bool


async def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
    except SinceError as error:
        print(f"searchsync replay: {error}", file=sys.stderr)
        return EXIT_USAGE
    partitions = list(range(settings.stream_partitions))
    if args.partition is not None:
        if not 0 <= args.partition < settings.stream_partitions:
            print(
                f"searchsync replay: --partition {args.partition} is not in "
                f"0..{settings.stream_partitions - 1} (STREAM_PARTITIONS)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        partitions = [args.partition]
    keys = Keys(settings.view_name, settings.stream_partitions)
    group = settings.consumer_group
    redis = connect_redis(settings, socket_timeout=10.0)
    try:
        plans = await _plans(redis, keys, group, since, partitions)
        header = f"replay since {_describe(since)} to group {group} of {keys.prefix[:-1]}"
        run = _Run(header, since, plans, args.json)
        return await _replay(redis, keys, group, run, yes=args.yes)
    finally:
        await redis.aclose()


async def _plans(
    redis: Redis, keys: Keys, group: str, since: Since, partitions: list[int]
) -> list[PartitionPlan]:
    progress = Progress("replay")
    plans: list[PartitionPlan] = []
    for partition in partitions:

        def counted(done: int, partition: int = partition) -> None:
            progress.update(f"counting p{partition} entries", done)

        plans.append(await plan_partition(redis, keys, group, partition, since, progress=counted))
    progress.done()
    return plans


async def _replay(redis: Redis, keys: Keys, group: str, run: _Run, *, yes: bool) -> int:
    refused = [plan for plan in run.plans if plan.refused]
    if refused:
        return _refuse(run, refused)
    todo = [plan for plan in run.plans if plan.first is not None]
    if not todo:
        return _report(run, "nothing to replay", EXIT_OK)
    if not yes and not confirm([run.header, *_table(run.plans), SAFETY], json_mode=run.json_mode):
        return _report(run, "not confirmed", EXIT_PROBLEM, table_shown=True)
    try:
        for plan in todo:
            await apply_plan(redis, keys, group, plan)
    except ApplyError as error:
        print(f"searchsync replay: {error}", file=sys.stderr)
        return _report(run, str(error), EXIT_PROBLEM)
    return _report(run, "replayed", EXIT_OK, table_shown=not yes)


def _refuse(run: _Run, refused: list[PartitionPlan]) -> int:
    reasons = [f"p{plan.partition}: {plan.refused}" for plan in refused]
    hint = (
        "--since is older than what the streams kept (STREAM_RETENTION_SECONDS); a replay "
        "would skip the missing entries. Nothing was changed. Rebuild the index from the "
        "view instead: searchsync resync"
    )
    if run.json_mode:
        print_json(_json(run, "refused", [*reasons, hint]))
    else:
        print(run.header, file=sys.stderr)
        for line in reasons:
            print(f"REFUSED {line}", file=sys.stderr)
        print(hint, file=sys.stderr)
    return EXIT_PROBLEM


def _report(run: _Run, outcome: str, code: int, *, table_shown: bool = False) -> int:
    if run.json_mode:
        print_json(_json(run, outcome, []))
        return code
    plans = run.plans
    if not table_shown:
        print("\n".join([run.header, *_table(plans)]))
    if outcome != "replayed":
        print(outcome[:1].upper() + outcome[1:] + ".")
        return code
    total = sum(plan.changes for plan in plans)
    moved = ", ".join(
        f"p{plan.partition} -> {format_id(plan.setid)}" for plan in plans if plan.setid
    )
    print(f"Replayed: {total} changes go back to the consumers (group moved: {moved}).")
    late = sum(plan.late_entries for plan in plans)
    if late:
        print(f"({late} of the entries were read by consumers while this ran, and counted.)")
    if not table_shown:
        print(SAFETY)
    return code


def _json(run: _Run, outcome: str, notes: list[str]) -> Any:
    return {
        "outcome": outcome,
        "since": {"kind": run.since.kind, "text": run.since.text},
        "entries": sum(plan.entries for plan in run.plans),
        "changes": sum(plan.changes for plan in run.plans),
        "partitions": [_row(plan) for plan in run.plans],
        "notes": notes,
        "safety": SAFETY,
    }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay", help="re-deliver retained stream entries to the consumers (safe: versions)"
    )
    p.add_argument(
        "--since",
        required=True,
        help="an ISO time (2026-12-04T13:00:00Z), a Materialize ts in ms, or an entry id "
        "(1733312345678-0)",
    )
    p.add_argument("--partition", type=int, help="only this partition")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_replay)
