"""``searchsync-consumer``: run one consumer replica until SIGTERM/SIGINT.

Start any number of them; they share the partitions (consumer.worker). Exit
status: 0 after a clean stop (log line "Orders sync worker stopped"), 1 on a
fatal error (e.g. the alias is a concrete index: the message names the fix), 2
on a configuration error (common.config) or settings that disagree with the
streams' layout (common.meta).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from ..common.config import EXIT_CONFIG, Settings, parse_command_line, settings_or_exit
from ..common.diagnostics import install_stack_dumps
from ..common.endpoint import heartbeat, serve_or_exit
from ..common.errors import Failure, FatalError, classify
from ..common.health import limits_for
from ..common.logs import configure_logging
from ..common.meta import StreamLayoutError
from ..common.opensearch import make_client
from ..common.redis_client import connect_redis
from .metrics import ConsumerMetrics
from .worker import Worker

__all__ = ["main", "run"]

log = logging.getLogger("searchsync.consumer")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run a consumer until ``stop`` is set; raises FatalError."""
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry, settings.consumer_identity())
    limits = limits_for(settings, role="consumer")
    server = serve_or_exit(settings, registry, lambda: metrics.health.verdict(limits))
    redis = connect_redis(settings, client_name=settings.consumer_identity())
    client = make_client(settings, maxsize=settings.stream_partitions + 2)
    beat = asyncio.create_task(heartbeat(metrics.health))
    try:
        await Worker(settings, redis, client, metrics).run(stop)
    finally:
        beat.cancel()
        await client.close()
        await redis.aclose()
        if server is not None:
            server.close()


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_stack_dumps(loop)
    try:
        await run(settings, stop)
    except StreamLayoutError as error:
        log.error("Consumer cannot start: %s", error)
        print(f"searchsync: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except FatalError as error:
        log.error("Consumer cannot continue: %s", error)
        return 1
    except Exception as error:
        if classify(error) is not Failure.FATAL:  # a bug: the traceback is what helps
            raise
        log.error("Consumer cannot continue: %s", error)  # e.g. Redis answered NOPERM
        return 1
    log.info("Orders sync worker stopped")
    return 0


def main() -> None:
    parse_command_line("searchsync-consumer", __doc__ or "")
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    # opensearch-py logs every failed request as a WARNING with its URL; the worker logs the
    # runbook's "OpenSearch bulk operation failed: …" for the same event, once.
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    sys.exit(asyncio.run(_main(settings)))


if __name__ == "__main__":
    main()
