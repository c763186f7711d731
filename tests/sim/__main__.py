"""``python -m tests.sim --seeds N [--seed S [--shrink | --drop I,J]] [--plant NAME]
[--held-bulks [--gc-deletes S]] [--polling]``.

Runs seeded schedules. Prints the report of each failing seed (the schedule, the
steps that name the failing key, the last steps, the replay command) and a JSON
summary as the last line (schedules, failures, seconds, schedules_per_s). With
``--seed S --shrink`` it leaves out chaos events while the same invariant still
breaks and prints the smaller schedule with its ``--drop`` replay. Exit 1 if any
schedule broke an invariant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from searchsync.consumer.runner import PartitionRunner
from searchsync.producer.polling import Poller
from searchsync.producer.session import SubscribeSession

from .plants import PLANTS, POLLER_PLANTS, PRODUCER_PLANTS
from .schedule import run_schedule, shrink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("--seeds", type=int, default=1000, help="how many schedules")
    parser.add_argument("--first", type=int, default=0, help="the first seed of --seeds")
    parser.add_argument("--seed", type=int, help="replay this one seed (prints its trace)")
    parser.add_argument(
        "--plant",
        choices=sorted({*PLANTS, *PRODUCER_PLANTS, *POLLER_PLANTS}),
        help="run a planted bug",
    )
    parser.add_argument(
        "--polling",
        action="store_true",
        help="producers poll (USE_SUBSCRIBE=false) or SUBSCRIBE, switching at restarts "
        "(tests/sim/polling.py; a poller plant implies it)",
    )
    parser.add_argument(
        "--held-bulks",
        action="store_true",
        help="hold one bulk per schedule on the way longer than OpenSearch's default "
        "gc_deletes (60 s), less than the index's",
    )
    parser.add_argument(
        "--gc-deletes",
        type=float,
        help="the index's gc_deletes in seconds (default: what searchsync creates)",
    )
    parser.add_argument(
        "--redis-nodes", type=int, default=1, help="the producer writes to a cluster of N masters"
    )
    parser.add_argument(
        "--product-first-read",
        action="store_true",
        help="runners size their first read as the product does (the regression seeds "
        "were found with a guess of one change an entry; read sizes move schedules)",
    )
    parser.add_argument("--stop", action="store_true", help="stop at the first failure")
    parser.add_argument("--shrink", action="store_true", help="with --seed: fewest chaos events")
    parser.add_argument("--drop", default="", help="with --seed: chaos events to leave out")
    args = parser.parse_args(argv)
    runner = PLANTS.get(args.plant or "", PartitionRunner)
    session = PRODUCER_PLANTS.get(args.plant or "", SubscribeSession)
    poller = POLLER_PLANTS.get(args.plant or "", Poller)
    options = {
        "held": args.held_bulks, "session": session, "gc_deletes": args.gc_deletes,
        "polling": args.polling, "poller": poller, "redis_nodes": args.redis_nodes,
        "product_first_read": args.product_first_read,
    }  # fmt: skip
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.perf_counter()
    failed: list[int] = []
    steps = 0
    drop = frozenset(int(n) for n in args.drop.split(",") if n)
    for seed in seeds:
        if args.seed is not None and args.shrink:
            outcome = shrink(seed, runner, **options)
        else:
            outcome = run_schedule(seed, runner, drop=drop, **options)
        steps += outcome.steps
        if args.seed is not None:
            print(outcome.report() if not outcome.ok else f"seed {seed}: ok")
            print(
                f"digest {outcome.digest}, {outcome.steps} steps, "
                f"{outcome.virtual_seconds:.1f} virtual s"
            )
        if not outcome.ok:
            failed.append(seed)
            if args.seed is None:
                print(outcome.report(), flush=True)
            if args.stop:
                break
    seconds = time.perf_counter() - started
    count = len(seeds) if not args.stop or not failed else seeds.index(failed[0]) + 1
    summary = {
        "schedules": count,
        "failures": len(failed),
        "failed_seeds": failed[:20],
        "steps": steps,
        "seconds": round(seconds, 2),
        "schedules_per_s": round(count / seconds, 1) if seconds else None,
        "plant": args.plant,
    }
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
