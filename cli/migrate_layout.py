"""``searchsync migrate-layout [--yes] [--json]``: move the view's Redis keys from key
layout 1 to layout 2 (hash tags, for Redis Cluster) in one Lua script (common.migrate:
every check before the first write; Redis does not roll a script back). Run it with
the view's producer and consumers stopped: it refuses while any of their leases is
held. Exit 0 moved (or nothing to move), 1 refused or not confirmed."""

from __future__ import annotations

import argparse

from ..common.config import Settings
from ..common.migrate import MigrationRefused, migrate
from ..common.redis_client import connect_redis
from .terminal import EXIT_OK, EXIT_PROBLEM, confirm, print_json

__all__ = ["register"]


async def cmd_migrate_layout(settings: Settings, args: argparse.Namespace) -> int:
    view = settings.view_name
    question = [
        f"Move the Redis keys of view {view} to key layout 2 (searchsync:{{{view}}}:…).",
        "The view's producer and consumers must be stopped; the move is refused otherwise.",
    ]
    if not args.yes and not confirm(question, json_mode=args.json):
        return EXIT_PROBLEM
    redis = connect_redis(settings, socket_timeout=30.0)
    try:
        moved = await migrate(redis, settings)
    except MigrationRefused as error:
        if args.json:
            print_json({"view": view, "migrated": False, "refused": str(error)})
        else:
            print(f"searchsync: migrate-layout refused: {error}")
        return EXIT_PROBLEM
    finally:
        await redis.aclose()
    if args.json:
        print_json({"view": view, "migrated": moved is not None, "keys": moved or 0})
    elif moved is None:
        print(f"view {view} has no key of layout 1: nothing to migrate")
    else:
        print(f"view {view}: {moved} keys moved to key layout 2")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate-layout", help="move the view's Redis keys to key layout 2")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_migrate_layout)
