"""``searchsync-consumer``: run one consumer replica until SIGTERM/SIGINT.

Start any number of them; they share the partitions (consumer.worker). With a
views file (SEARCHSYNC_CONFIG, common.views) each process serves every view: one
worker per view, sharing the process's Redis and OpenSearch clients, its metrics
labelled ``view`` (consumer.fleet); a fatal error of one view stops them all. Exit
status: 0 after a clean stop (log line "Orders sync worker stopped"), 1 on a
fatal error (e.g. the alias is a concrete index: the message names the fix), 2
on a configuration error (common.config, common.views) or settings that disagree with the
streams' layout (common.meta).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from ..common.config import EXIT_CONFIG, parse_command_line
from ..common.diagnostics import install_stack_dumps
from ..common.endpoint import heartbeat, serve_or_exit
from ..common.errors import Failure, FatalError, classify
from ..common.health import Verdict, limits_for
from ..common.logs import configure_logging
from ..common.meta import StreamLayoutError
from ..common.opensearch import make_client
from ..common.redis_client import connect_redis
from ..common.views import Deployment, deployment_or_exit
from .fleet import ViewsCollector, worst
from .metrics import ConsumerMetrics
from .worker import Worker

__all__ = ["main", "run"]

log = logging.getLogger("searchsync.consumer")


async def run(deployment: Deployment, stop: asyncio.Event) -> None:
    """Run a consumer of every view until ``stop`` is set; raises FatalError (or
    StreamLayoutError) of the first view that meets one, after stopping the others."""
    # the process's own settings (connections, identity, endpoint) are the environment's,
    # the same in every view's
    process = deployment.views[0]
    me = process.consumer_identity()
    registry = CollectorRegistry()
    metrics: dict[str, ConsumerMetrics] = {}
    verdicts: dict[str, Callable[[], Verdict]] = {}
    for view in deployment.views:
        # one view from the environment: unlabelled, as before views files existed
        own = registry if deployment.source is None else CollectorRegistry()
        metrics[view.view_name] = found = ConsumerMetrics(own, me)
        limits = limits_for(view, role="consumer")
        verdicts[view.view_name] = functools.partial(found.health.verdict, limits)
    health: Callable[[], Verdict]
    if deployment.source is None:
        # one view from the environment: /healthz says why as before (runbook), unnamed
        health = verdicts[process.view_name]
    else:
        registry.register(ViewsCollector({n: m.registry for n, m in metrics.items()}))
        health = functools.partial(worst, verdicts)
    server = serve_or_exit(process, registry, health)
    redis = connect_redis(process, client_name=me)
    partitions = sum(view.stream_partitions for view in deployment.views)
    client = make_client(process, maxsize=partitions + 2)
    beats = [asyncio.create_task(heartbeat(m.health)) for m in metrics.values()]
    try:
        workers = [
            Worker(view, redis, client, metrics[view.view_name]) for view in deployment.views
        ]
        await _run_all(workers, stop)
    finally:
        for beat in beats:
            beat.cancel()
        await client.close()
        await redis.aclose()
        if server is not None:
            server.close()


async def _run_all(workers: list[Worker], stop: asyncio.Event) -> None:
    """Every worker until ``stop``; the first to end (a fatal error) stops the others,
    which shut down cleanly, and its error is raised."""
    together = asyncio.Event()

    async def relay() -> None:
        await stop.wait()
        together.set()

    async def one(worker: Worker) -> None:
        try:
            await worker.run(together)
        finally:
            together.set()

    relaying = asyncio.create_task(relay())
    try:
        results = await asyncio.gather(*(one(w) for w in workers), return_exceptions=True)
    finally:
        relaying.cancel()
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _main(deployment: Deployment) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_stack_dumps(loop)
    try:
        await run(deployment, stop)
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
    deployment = deployment_or_exit()
    settings = deployment.views[0]
    configure_logging(settings.log_level, settings.log_format)
    # opensearch-py logs every failed request as a WARNING with its URL; the worker logs the
    # runbook's "OpenSearch bulk operation failed: …" for the same event, once.
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    sys.exit(asyncio.run(_main(deployment)))


if __name__ == "__main__":
    main()
