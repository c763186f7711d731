"""``python -m devstack.mzemu``: run the Materialize SUBSCRIBE emulator.

Configuration comes from the environment (see ``config.py``); a bad value exits
with status 2, a failure to reach PostgreSQL or to listen with status 1.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys

from devstack.mzemu.config import ConfigError, load_config
from devstack.mzemu.memory import start_tracing
from devstack.mzemu.server import serve


def main() -> int:
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"mzemu: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("psycopg").setLevel(logging.WARNING)
    # The arrangement is millions of immutable objects without cycles; frequent full
    # collections over them would stall streaming, so collect less often (the
    # engine also freezes each freshly loaded arrangement).
    gc.set_threshold(100_000, 50, 100)
    if config.tracemalloc_path and config.tracemalloc_frames:
        start_tracing(config.tracemalloc_frames)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
