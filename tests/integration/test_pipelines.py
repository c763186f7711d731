"""common/pipelines.execute_pipeline: a command Redis refuses inside a pipeline is raised
as Redis said it (its code first: common.errors classifies by it), on a single Redis and
on a cluster.

Services: a one-node Redis Cluster (devstack.harness.cluster_redis), reached with both
clients searchsync builds (common/redis_client: REDIS_CLUSTER false and true).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from searchsync.common.errors import Failure, classify
from searchsync.common.pipelines import execute_pipeline
from tests.support.cluster_redis import OneNodeCluster, one_node_cluster

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[OneNodeCluster]:
    with one_node_cluster() as server:
        yield server


@pytest.mark.parametrize("client", ["plain", "cluster"])
async def test_a_refused_command_is_raised_untouched(cluster: OneNodeCluster, client: str) -> None:
    redis: Redis = (
        Redis.from_url(cluster.url) if client == "plain" else RedisCluster.from_url(cluster.url)  # type: ignore[assignment]
    )
    try:
        await redis.config_set("min-replicas-to-write", 1)  # no replica: writes refused
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(f"{{p}}refused-{client}", "1")
                pipe.get(f"{{p}}read-{client}")
                with pytest.raises(ResponseError) as refused:
                    await execute_pipeline(pipe)
        finally:
            await redis.config_set("min-replicas-to-write", 0)
        assert str(refused.value) == "NOREPLICAS Not enough good replicas to write."
        assert classify(refused.value) is Failure.TRANSIENT

        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{{p}}written-{client}", "1")
            pipe.get(f"{{p}}written-{client}")
            assert await execute_pipeline(pipe) == [True, b"1"]
    finally:
        await redis.aclose()
