"""Fixtures for tests that talk to the devstack's OpenSearch node directly.

``search``: an AsyncOpenSearch on OS_HOST:OS_PORT (no retries, 30 s a request);
``alias_fixture(prefix)``: a fresh alias name ``<prefix>_<random>`` whose indexes
(``<name>*``) are deleted after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch

from devstack.env import require

__all__ = ["alias_fixture", "search"]


@pytest.fixture
async def search() -> AsyncIterator[AsyncOpenSearch]:
    env = require(("OS_HOST", "OS_PORT"))
    client = AsyncOpenSearch(
        hosts=[{"host": env["OS_HOST"], "port": int(env["OS_PORT"])}], timeout=30, max_retries=0
    )
    try:
        yield client
    finally:
        await client.close()


def alias_fixture(prefix: str) -> Any:
    """A test module's ``alias`` fixture (assign it to a variable named ``alias``)."""

    async def alias(search: AsyncOpenSearch) -> AsyncIterator[str]:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        yield name
        rows = await search.cat.indices(index=f"{name}*", format="json", h="index")
        names = sorted(row["index"] for row in rows)
        if names:
            await search.indices.delete(index=",".join(names))

    return pytest.fixture(alias)
