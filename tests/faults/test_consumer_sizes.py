"""A bulk that something between the consumer and OpenSearch drops for its size.

A proxy or load balancer with a body limit (or a node with a lower
``http.max_content_length`` that resets instead of answering 413) closes the
connection on a large request and never answers. Before, the consumer took that
for an outage and retried the same request forever: the partition stalled. Now
it asks OpenSearch whether it answers at all; since it does, the request is
split, the small changes go through, and the one document that is too large is
charged an attempt per try and dead-lettered after MAX_DELIVERIES.

Real services: the devstack's Redis and OpenSearch node, reached through an HTTP
proxy (tests.support.http_proxy) that resets any request above a size; the
consumer runs in the test's event loop.
"""

from __future__ import annotations

import time

import pytest

from searchsync.common.entries import decode_dead_letter
from searchsync.common.index import ensure_index
from tests.support.consumer import Stack, orders, running_worker, stack_fixture, wait_for
from tests.support.http_proxy import Action, HttpProxy, RequestHead

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LIMIT = 1_000_000  # bytes of request body the proxy lets through


class BodyLimitProxy(HttpProxy):
    """Forwards requests up to LIMIT bytes; resets the connection on larger ones."""

    def action(self, request: RequestHead) -> Action:
        if (request.content_length or 0) > LIMIT:
            return "reset"
        return super().action(request)


stack = stack_fixture(partitions=1)


async def settled(stack: Stack) -> bool:
    return await stack.outstanding() == 0


async def test_a_reset_on_a_huge_bulk_is_split_and_never_retried_forever(stack: Stack) -> None:
    proxy = BodyLimitProxy(stack.env["OS_HOST"], int(stack.env["OS_PORT"]))
    proxy.start()
    await ensure_index(stack.search, stack.alias, retention_seconds=3600)
    settings = stack.settings(
        OS_PORT=proxy.port, MAX_DELIVERIES=2, RETRY_INITIAL_BACKOFF=0.05, RETRY_MAX_BACKOFF=0.2
    )
    t = int(time.time() * 1000)
    # one entry: 40 small changes and one of 1.5 MB, so the first bulk holds them all
    await stack.write(
        t,
        [
            *orders(0, 40, status=None, store_address="x" * 100),
            ("order:FM-big", {"x": "y" * 1_500_000}),
        ],
    )
    await stack.progress(t + 1)
    try:
        async with running_worker(settings):
            await wait_for(lambda: settled(stack), 60, "every change settled")
    finally:
        proxy.close()
    assert proxy.refused >= 1 + 2  # the whole bulk, then the big one alone, twice
    docs = await stack.documents()
    assert sorted(docs) == sorted(key for key, _ in orders(0, 40))
    (fields,) = await stack.dead_letters()
    letter = decode_dead_letter(fields)
    assert letter.key == b"order:FM-big"
    assert letter.reason.startswith("gave up after 2 attempts: OpenSearch dropped the request")
