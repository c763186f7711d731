"""``python -m tests.chaos``: see tests/chaos/__init__.py.

The last line of stdout is one JSON object (the verdict). Exit status: 0 no drift
and the dead-letter stream holds exactly the planted poison; 1 otherwise (a summary
on stderr); 2 the harness itself failed (setup, a service that would not start);
130 interrupted. Progress lines go to stdout and to <run dir>/chaos.log;
``--json-only`` keeps stdout to the JSON line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.chaos.run import Options, main_run, random_seed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="length of the load+fault phase (default 5; at least one full round of "
        "faults runs, so below ~4.5 the phase stretches to fit it)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=380.0,
        help="FreshMart changes per second (default 380: >= 100,000 in 5 minutes)",
    )
    parser.add_argument("--json-only", action="store_true", help="stdout: the JSON line only")
    parser.add_argument("--keep", action="store_true", help="keep the run directory on success")
    parser.add_argument("--run-dir", type=Path, default=None, help="default .devstack/chaos/…")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        _parser().error("--minutes and --rate must be > 0")
    seed = args.seed if args.seed is not None else random_seed()
    options = Options(
        seed=seed,
        minutes=args.minutes,
        rate=args.rate,
        json_only=args.json_only,
        keep=args.keep,
        run_dir=args.run_dir,
    )
    return main_run(options)


if __name__ == "__main__":
    sys.exit(main())
