"""``searchsync``: the operator's command line; one module per command (a command's
own I/O beside it: cli.resync_run and cli.resync_load serve cli.resync).

    searchsync status [--json]               per partition: length, lag, pending, owner,
                                             applied-through ts, freshness (cli.status)
    searchsync verify [--json] [--settle S]  view vs index; exit 1 on drift (cli.verify)
    searchsync index create|adopt|mapping-diff
                                             the alias and its indexes (cli.index)
    searchsync resync [--yes] [--grace S | --keep-old] [--abort]
                                             rebuild the index, swap the alias (cli.resync)
    searchsync dlq list|show|retry|purge      the dead-letter stream (cli.dlq)
    searchsync purge-key KEY [--yes]          one key's acknowledged entries and its
                                             letters out of Redis (cli.purge)
    searchsync replay --since T [--partition N]
                                             re-deliver retained entries (cli.replay)
    searchsync wait --ts T | --now [--timeout S]
                                             until T is searchable (cli.wait)
    searchsync migrate-layout [--yes]         the view's Redis keys from key layout 1
                                             to 2 (cli.migrate_layout)

Every command has ``--view V``: the view of the views file (SEARCHSYNC_CONFIG,
common.views) it acts on; required when the file lists several, except for ``status``,
which then shows every view. Every command has ``--json`` (one JSON object on stdout;
prompts and progress on stderr) and every command that changes data asks for
confirmation unless ``--yes``.
Exit codes (cli.terminal): 0 ok; 1 a problem was found or the work was not done;
2 bad usage or configuration (naming the variable); 3 a service cannot be reached;
4 OS_INDEX_NAME cannot be written through (the message names the fix).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from opensearchpy import TransportError
from redis.exceptions import RedisError

from ..common.config import EXIT_CONFIG, Settings
from ..common.errors import FatalError
from ..common.index import IndexLayoutError
from ..common.opensearch import explain
from ..common.views import ViewsError, deployment_or_exit
from . import dlq, index, migrate_layout, purge, replay, resync, status, verify, wait
from .terminal import EXIT_LAYOUT, EXIT_UNREACHABLE, EXIT_USAGE

__all__ = ["main"]

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]

# Each module adds its subcommand (``register(sub)``), in the order `--help` lists them.
_COMMANDS = (status, verify, index, resync, dlq, purge, replay, wait, migrate_layout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="searchsync",
        description="Operate a searchsync deployment (configuration from the environment).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS:
        module.register(sub)
    _add_view_option(parser)
    return parser


def _add_view_option(parser: argparse.ArgumentParser) -> None:
    """``--view`` on every command that runs (the leaves of the subcommand tree)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_view_option(child)
            return
    parser.add_argument(
        "--view",
        help="the view of the views file (SEARCHSYNC_CONFIG) to act on; required when it "
        "lists several (status: all of them without it)",
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    deployment = deployment_or_exit()
    every_view = args.run is status.cmd_status and args.view is None
    try:
        settings = deployment.views[0] if every_view else deployment.view(args.view)
    except ViewsError as error:
        print(f"searchsync: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    run: Command = args.run
    try:
        if every_view and len(deployment.views) > 1:
            code = asyncio.run(status.status_of_views(deployment.views, args))
        else:
            code = asyncio.run(run(settings, args))
    except KeyboardInterrupt:
        print("searchsync: interrupted", file=sys.stderr)
        code = 130
    except IndexLayoutError as error:
        print(f"searchsync: {error}", file=sys.stderr)
        code = EXIT_LAYOUT
    except FatalError as error:
        # a setting that cannot work, e.g. OS_AUTH=sigv4 without AWS credentials: the
        # message names it, like a configuration error
        print(f"searchsync: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except TransportError as error:
        print(f"searchsync: cannot reach a service: {explain(settings, error)}", file=sys.stderr)
        code = EXIT_UNREACHABLE
    except (RedisError, OSError) as error:  # Redis's say "Redis at host:port: …"
        print(f"searchsync: cannot reach a service: {error}", file=sys.stderr)
        code = EXIT_UNREACHABLE
    except psycopg.Error as error:
        print(f"searchsync: cannot read the view from Materialize: {error}", file=sys.stderr)
        code = EXIT_UNREACHABLE
    sys.exit(code)


if __name__ == "__main__":
    main()
