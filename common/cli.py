"""``searchsync``: the operator's command line.

    searchsync status [--json]               per partition: length, lag, pending, owner,
                                             applied-through ts, freshness
    searchsync verify [--json] [--settle S]  view vs index: counts and every document;
                                             exit 1 on drift
    searchsync index create [--json]         the alias and its first index, if missing
    searchsync index adopt [--yes] [--json] [--write-index NAME]
                                             a concrete index named like the alias goes
                                             behind the alias as <alias>_vN (common.adopt);
                                             exit 0 done or already an alias, 1 nothing
                                             to adopt or refused
    searchsync index mapping-diff [--json]   the project's mapping vs the write index's;
                                             exit 1 when they differ

Configuration is the service's own (environment, common.config): a bad value
exits 2 naming the variable. Exit 3 when a service cannot be reached. Exit 4 when
OS_INDEX_NAME cannot be written through (a concrete index named like the alias, an
alias without a write index): the message names the fix.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import msgspec
import psycopg
from opensearchpy import TransportError
from redis.exceptions import RedisError

from common import adopt
from common import status as status_report
from common.config import Settings, settings_or_exit
from common.index import (
    IndexLayoutError,
    ensure_index,
    index_body,
    live_mapping,
    mapping_diff,
    render_mapping_diff,
)
from common.keys import Keys
from common.materialize import connect
from common.opensearch import make_client, status_of
from common.redis_client import connect_redis
from common.verify import Drift, compare, read_index, read_view

__all__ = ["main"]

EXIT_DRIFT = 1
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
EXIT_LAYOUT = 4


def _print_json(value: object) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings.redis_url, socket_timeout=5.0)
    try:
        raw = await status_report.gather(redis, keys, settings.consumer_group)
    finally:
        await redis.aclose()
    report = status_report.build(
        raw,
        keys,
        view=settings.view_name,
        group=settings.consumer_group,
        now_ms=status_report.now_ms(),
        member_ttl_ms=int(settings.lease_ttl_seconds * 1000),
    )
    if args.json:
        _print_json(report)
    else:
        print(status_report.render(report))
    return 0


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
        _print_json(
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
    return 0 if drift.ok else EXIT_DRIFT


async def cmd_index_create(settings: Settings, args: argparse.Namespace) -> int:
    client = make_client(settings)
    try:
        name = await ensure_index(
            client, settings.os_index_name, retention_seconds=settings.stream_retention_seconds
        )
    finally:
        await client.close()
    if args.json:
        _print_json({"alias": settings.os_index_name, "index": name})
    else:
        print(f"alias {settings.os_index_name} -> {name}")
    return 0


def _confirm(lines: list[str], out: TextIO) -> bool:
    for line in lines:
        print(line, file=out)
    print("Proceed? [y/N] ", end="", file=out, flush=True)
    answer = sys.stdin.readline()  # "" at end of input: no
    if not sys.stdin.isatty():
        print(file=out)  # the answer did not echo: end the prompt's line
    return answer.strip().lower() in ("y", "yes")


def _progress(line: str) -> None:
    print(f"searchsync index adopt: {line}", file=sys.stderr, flush=True)


async def cmd_index_adopt(settings: Settings, args: argparse.Namespace) -> int:
    alias = settings.os_index_name
    client = make_client(settings)
    done: adopt.Executed | None = None
    try:
        the_plan = adopt.plan(await adopt.gather(client, alias), write_index_name=args.write_index)
        outcome, message = the_plan.outcome, the_plan.message
        if the_plan.verdict is adopt.Verdict.RUN:
            header = [f"searchsync index adopt will, for {alias}:", *adopt.describe(the_plan)]
            # with --json, stdout holds only the result object
            if args.yes or _confirm(header, sys.stderr if args.json else sys.stdout):
                try:
                    done = await adopt.execute(client, the_plan, _progress)
                except adopt.AdoptError as error:
                    outcome, message = "refused", str(error)
                except TransportError as error:
                    if status_of(error) is None:
                        raise  # no answer: "cannot reach a service", exit 3
                    outcome = "refused"
                    message = (
                        f"OpenSearch refused a step: {error}. Nothing after it was done; run "
                        f"adopt again once that is fixed (it resumes where it stopped)."
                    )
            else:
                outcome, message = "refused", "not confirmed: nothing was changed"
    finally:
        await client.close()
    ok = outcome in ("adopted", "write_index_set", "already_an_alias")
    if done is not None:
        kept = f"; {done.documents} documents kept" if done.documents is not None else ""
        summary = f"alias {alias} -> {the_plan.target} (write index){kept}"
        message = f"{message} {summary}" if message else summary
    if args.json:
        _print_json(
            {
                "alias": alias,
                "outcome": outcome,
                "index": the_plan.target if ok else None,
                "steps": [step.value for step in done.steps] if done else [],
                "documents": done.documents if done else None,
                "message": message,
            }
        )
    else:
        if ok:
            print(message)
        else:
            print(f"searchsync index adopt: {message}", file=sys.stderr)
        if outcome == "adopted":
            print("`searchsync index mapping-diff` compares its mapping with the project's")
    return 0 if ok else EXIT_REFUSED


async def cmd_index_mapping_diff(settings: Settings, args: argparse.Namespace) -> int:
    alias = settings.os_index_name
    client = make_client(settings)
    try:
        name, live = await live_mapping(client, alias)
    finally:
        await client.close()
    project = index_body(retention_seconds=settings.stream_retention_seconds)["mappings"]
    diff = mapping_diff(project, live)
    if args.json:
        _print_json(
            {
                "alias": alias,
                "index": name,
                "equal": diff.equal,
                "dynamic": (
                    {"project": diff.dynamic[0], "index": diff.dynamic[1]} if diff.dynamic else None
                ),
                "added": diff.added,
                "removed": diff.removed,
                "changed": {
                    path: {"project": ours, "index": theirs}
                    for path, (ours, theirs) in diff.changed.items()
                },
            }
        )
    else:
        print("\n".join(render_mapping_diff(diff, alias, name)))
    return 0 if diff.equal else 1


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchsync", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="per-partition state of the streams")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_status)
    p = sub.add_parser("verify", help="compare the view with the index; exit 1 on drift")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to keep re-reading keys that differ (changes in flight), default 10",
    )
    p.set_defaults(run=cmd_verify)
    p = sub.add_parser("index", help="index management")
    index_sub = p.add_subparsers(dest="index_command", required=True)
    c = index_sub.add_parser("create", help="create the alias and its first index if missing")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_index_create)
    c = index_sub.add_parser(
        "adopt",
        help="put a concrete index named like the alias behind the alias, as <alias>_vN",
    )
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.add_argument("--json", action="store_true", help="print one JSON object (prompts on stderr)")
    c.add_argument(
        "--write-index",
        metavar="NAME",
        help="for an alias over several indexes with no write index: mark NAME as it",
    )
    c.set_defaults(run=cmd_index_adopt)
    c = index_sub.add_parser(
        "mapping-diff", help="the project's mapping vs the write index's; exit 1 when they differ"
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_index_mapping_diff)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = settings_or_exit()
    run: Command = args.run
    try:
        code = asyncio.run(run(settings, args))
    except IndexLayoutError as error:
        print(f"searchsync: {error}", file=sys.stderr)
        code = EXIT_LAYOUT
    except (RedisError, TransportError, OSError) as error:
        print(f"searchsync: cannot reach a service: {error}", file=sys.stderr)
        code = EXIT_UNREACHABLE
    except psycopg.Error as error:
        print(f"searchsync: cannot read the view from Materialize: {error}", file=sys.stderr)
        code = EXIT_UNREACHABLE
    sys.exit(code)


if __name__ == "__main__":
    main()
