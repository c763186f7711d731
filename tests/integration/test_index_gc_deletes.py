"""A write index keeps delete tombstones for STREAM_RETENTION_SECONDS, even one searchsync
did not create (the race the simulator found: tests/sim, seeds 13 and 41 with
--held-bulks --gc-deletes 60), checked against the devstack's OpenSearch node.

An index made by hand (or adopted: a clone keeps its source's settings) has
OpenSearch's default ``index.gc_deletes`` of 60 s: a bulk held up on the way for longer
lands after a delete's tombstone is forgotten and brings an older version back.
ensure_index (consumer start, ``searchsync index create``) raises it. Indexes are
named ``test_gc_<random>*`` and deleted afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from opensearchpy import AsyncOpenSearch

from searchsync.common.index import ensure_index, keep_tombstones
from tests.support.indexes import alias_fixture, search

__all__ = ["search"]  # the fixture, from tests.support.indexes

pytestmark = pytest.mark.timeout(60)


alias = alias_fixture("test_gc")


async def gc_deletes(search: AsyncOpenSearch, index: str) -> Any:
    found: Any = await search.indices.get_settings(
        index=index, name="index.gc_deletes", flat_settings=True
    )
    return found.get(index, {}).get("settings", {}).get("index.gc_deletes")  # {}: not set


async def test_an_index_made_by_hand_gets_the_retention_as_gc_deletes(
    search: AsyncOpenSearch, alias: str
) -> None:
    index = f"{alias}_v1"
    body = {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "aliases": {alias: {"is_write_index": True}},
    }
    await search.indices.create(index=index, body=body)
    assert await gc_deletes(search, index) is None  # OpenSearch's default: 60 s
    assert await ensure_index(search, alias, retention_seconds=3600) == index
    assert await gc_deletes(search, index) == "3600s"
    # already long enough: left alone (a longer one too)
    assert not await keep_tombstones(search, index, 3600)
    await search.indices.put_settings(index=index, body={"index": {"gc_deletes": "2d"}})
    assert not await keep_tombstones(search, index, 3600)
    assert await gc_deletes(search, index) == "2d"


async def test_a_new_index_is_created_with_it(search: AsyncOpenSearch, alias: str) -> None:
    index = await ensure_index(search, alias, retention_seconds=7200)
    assert await gc_deletes(search, index) == "7200s"
    assert not await keep_tombstones(search, index, 7200)
