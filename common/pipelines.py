"""Every redis-py pipeline searchsync runs is executed here, so that a command Redis
refused is raised as Redis said it.

redis-py's ``execute()`` rewrites the first refused command's error into "Command # N
(…) of pipeline caused error: …" (before redis-py 8.1 the reply's own text is lost on
the way). :func:`common.errors.classify` reads a reply's code from the message's first
word: a NOREPLICAS, MISCONF or NOGROUP refused inside a pipeline was classified fatal
and the process exited where it should have backed off and retried. Here the pipeline
runs with ``raise_on_error=False`` and the first error reply is raised untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

__all__ = ["execute_pipeline", "raise_first_error"]


async def execute_pipeline(pipe: Pipeline | ClusterPipeline) -> list[Any]:
    """Run ``pipe`` (one round trip per node); return its replies, in order. Raises the
    first error reply (redis.exceptions.ResponseError, as parsed from Redis's reply),
    after every command has run: a non-transactional pipeline runs the commands after a
    refused one too. Raises redis ConnectionError/TimeoutError on connection trouble
    (bounded by the client's socket timeout), when any of it may have run."""
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    raise_first_error(replies)
    return replies


def raise_first_error(replies: Iterable[Any]) -> None:
    """Raise the first reply that is an error (an exception instance), if any."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
