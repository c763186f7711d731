"""common.opensearch.NodesTransport over real sockets: OS_HOSTS naming the devstack's
OpenSearch node and a port where nothing listens (refused: the request never left, so
the live node takes it), or an asyncio server that reads the request and drops the
connection (the request may have been applied: the failure is the caller's to retry).
Each client is new, as each CLI command's is: a shuffled pool, no node marked dead."""

from __future__ import annotations

import asyncio

from opensearchpy import ConnectionError as OpenSearchConnectionError

from devstack.env import require
from devstack.harness.services import free_port
from searchsync.common.config import load_settings
from searchsync.common.opensearch import make_client, never_sent

CLIENTS = 8


def live_node() -> str:
    env = require(("OS_HOST", "OS_PORT"))
    return f"{env['OS_HOST']}:{env['OS_PORT']}"


async def test_a_refused_node_is_passed_over_for_a_live_one() -> None:
    settings = load_settings({"OS_HOSTS": f"127.0.0.1:{free_port()},{live_node()}"})
    for _ in range(CLIENTS):
        client = make_client(settings)
        try:
            # round robin over two nodes: one of the first two requests meets the refusal
            for _ in range(3):
                health = await client.cluster.health()
                assert health["status"] in ("green", "yellow")
        finally:
            await client.close()


async def test_a_connection_dropped_after_the_request_went_out_is_not_sent_again() -> None:
    received = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        received += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = load_settings({"OS_HOSTS": f"127.0.0.1:{port},{live_node()}"})
    failed = 0
    try:
        for _ in range(CLIENTS):
            client = make_client(settings)
            try:
                for _ in range(2):
                    try:
                        # a POST: aiohttp itself sends an idempotent GET once more
                        await client.count(body={"query": {"match_all": {}}})
                    except OpenSearchConnectionError as error:
                        assert not never_sent(error), error
                        failed += 1
            finally:
                await client.close()
    finally:
        server.close()
        await server.wait_closed()
    # each client's two requests: one per node; the dropped one raised, never resent
    assert received == failed == CLIENTS
