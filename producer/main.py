"""``searchsync-producer``: Materialize view → partitioned Redis Streams.

One process per view: with a views file (SEARCHSYNC_CONFIG, common.views) that
lists several, ``--view NAME`` (or SEARCHSYNC_VIEW) picks this process's view.
Exit status: 0 after SIGTERM/SIGINT (the batch in hand is written and
checkpointed first), 1 on a fatal error, 2 on a bad configuration (the message
names the variable, or the views file, the view and the key). SIGUSR1 writes
every thread's and task's stack to the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Final

from prometheus_client import CollectorRegistry

from ..common.config import EXIT_CONFIG, Settings
from ..common.diagnostics import install_stack_dumps
from ..common.endpoint import heartbeat, serve_or_exit
from ..common.health import limits_for
from ..common.logs import configure_logging
from ..common.views import ViewsError, deployment_or_exit, parse_view_argument
from . import native
from .metrics import ProducerMetrics
from .service import run_producer

__all__ = ["main", "run"]

log = logging.getLogger("searchsync.producer")

# The cyclic GC's first threshold (default 700 net container allocations): a FETCH
# allocates a few tuples per row, so at 700 the collector ran every ~200 rows and
# its older generations kept rescanning the batch in hand, the held snapshot and
# the set of snapshot keys: about a tenth of the producer's CPU in a backlog (perf
# samples of bench/producer.py, both settings in the same run). Rows
# are freed by reference counting, not by the collector, so at 100,000 it runs
# rarely and only the few reference cycles (asyncio exceptions) wait longer.
GC_THRESHOLDS: Final = (100_000, 20, 10)


async def run(settings: Settings) -> int:
    """Run the producer until SIGTERM/SIGINT; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    install_stack_dumps(loop)
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry, settings.view_name)
    limits = limits_for(settings, role="producer")
    serve_or_exit(settings, registry, lambda: metrics.health.verdict(limits))
    log.info(
        "Producer starting for %s (%s, %d partitions)",
        settings.view_name,
        "SUBSCRIBE" if settings.use_subscribe else "polling",
        settings.stream_partitions,
        extra={"settings": settings.redacted()},
    )
    if native.speedups is None:
        log.warning(
            "searchsync.producer._speedups is not built (no C compiler when it was installed?): "
            "rows are encoded on the pure-Python path, ~1.6x the CPU per row"
        )
    beat = asyncio.create_task(heartbeat(metrics.health))
    try:
        return await run_producer(settings, stop, metrics)
    finally:
        beat.cancel()


def main() -> None:
    name = parse_view_argument("searchsync-producer", __doc__ or "")
    deployment = deployment_or_exit()
    try:
        settings = deployment.view(name)
    except ViewsError as error:
        print(f"searchsync: configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(settings.log_level, settings.log_format)
    gc.set_threshold(*GC_THRESHOLDS)
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
