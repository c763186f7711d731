"""``searchsync index create | adopt | mapping-diff``: the alias and its indexes.

index create [--json]                   the alias and its first index, if missing
index adopt [--yes] [--json] [--write-index NAME]
                                        a concrete index named like the alias goes
                                        behind the alias as <alias>_vN (common.adopt);
                                        exit 0 done or already an alias, 1 nothing
                                        to adopt or refused
index mapping-diff [--json]             the project's mapping vs the write index's;
                                        exit 1 when they differ
"""

from __future__ import annotations

import argparse
import sys

from opensearchpy import TransportError

from ..common import adopt
from ..common.config import Settings
from ..common.index import (
    ensure_index,
    index_body,
    live_mapping,
    mapping_diff,
    render_mapping_diff,
)
from ..common.opensearch import make_client, status_of
from ..common.views import view_properties
from .terminal import EXIT_OK, EXIT_PROBLEM, Progress, confirm, print_json

__all__ = ["register"]


async def cmd_index_create(settings: Settings, args: argparse.Namespace) -> int:
    client = make_client(settings)
    try:
        name = await ensure_index(
            client,
            settings.os_index_name,
            retention_seconds=settings.stream_retention_seconds,
            replicas=settings.os_index_replicas,
            refresh_interval=settings.os_refresh_interval,
            properties=view_properties(settings),
        )
    finally:
        await client.close()
    if args.json:
        print_json({"alias": settings.os_index_name, "index": name})
    else:
        print(f"alias {settings.os_index_name} -> {name}")
    return EXIT_OK


async def cmd_index_adopt(settings: Settings, args: argparse.Namespace) -> int:
    alias = settings.os_index_name
    client = make_client(settings)
    done: adopt.Executed | None = None
    try:
        the_plan = adopt.plan(await adopt.gather(client, alias), write_index_name=args.write_index)
        outcome, message = the_plan.outcome, the_plan.message
        if the_plan.verdict is adopt.Verdict.RUN:
            header = [f"searchsync index adopt will, for {alias}:", *adopt.describe(the_plan)]
            if args.yes or confirm(header, json_mode=args.json):
                try:
                    done = await adopt.execute(
                        client, the_plan, Progress("searchsync index adopt").note
                    )
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
        print_json(
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
    return EXIT_OK if ok else EXIT_PROBLEM


async def cmd_index_mapping_diff(settings: Settings, args: argparse.Namespace) -> int:
    alias = settings.os_index_name
    client = make_client(settings)
    try:
        name, live = await live_mapping(client, alias)
    finally:
        await client.close()
    project = index_body(
        retention_seconds=settings.stream_retention_seconds,
        properties=view_properties(settings),
    )["mappings"]
    diff = mapping_diff(project, live)
    if args.json:
        print_json(
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
    return EXIT_OK if diff.equal else EXIT_PROBLEM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="the alias and its indexes")
    index_sub = p.add_subparsers(dest="index_command", required=True)
    c = index_sub.add_parser("create", help="create the alias and its first index if missing")
    c.add_argument("--json", action="store_true", help="print one JSON object")
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
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(run=cmd_index_mapping_diff)
