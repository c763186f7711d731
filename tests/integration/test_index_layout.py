"""The write target behind OS_INDEX_NAME, checked against the devstack's real OpenSearch node.

Issue "A concrete index named like the alias stalls forever": the runbook's Force
Resync makes a *concrete* index named like the alias (``curl -X PUT /orders``), and
bulks with ``require_alias=true`` then fail item by item, forever. An alias over several
indexes with no write index makes every item fail too. ensure_index (consumer start,
``searchsync index create``) must refuse both with an error that names the fix.

Every index made here is named ``test_layout_<random>*`` and deleted afterwards: the
node is shared with other tests and the demo.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opensearchpy import AsyncOpenSearch

from devstack.env import require
from searchsync.common import index as index_lib
from searchsync.common.errors import FatalError
from searchsync.common.index import ensure_index
from tests.support.consumer import ConsumerProcess, cleanup, make_stack
from tests.support.indexes import alias_fixture, search

__all__ = ["search"]  # the fixture, from tests.support.indexes

pytestmark = pytest.mark.timeout(120)

_BARE: dict[str, Any] = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}


alias = alias_fixture("test_layout")


async def _alias_over_two(search: AsyncOpenSearch, alias: str) -> list[str]:
    names = [f"{alias}_v1", f"{alias}_v2"]
    for name in names:
        await search.indices.create(index=name, body=_BARE)
    await search.indices.update_aliases(
        body={"actions": [{"add": {"index": name, "alias": alias}} for name in names]}
    )
    return names


async def _bulk(search: AsyncOpenSearch, alias: str) -> list[dict[str, Any]]:
    """One upsert and one delete through ``alias``, exactly as consumer.bulk sends them."""
    from searchsync.consumer.bulk import BULK_PARAMS

    body = (
        b'{"index":{"_id":"k1","version":5,"version_type":"external_gte"}}\n{"n":1}\n'
        b'{"delete":{"_id":"k2","version":5,"version_type":"external_gte"}}\n'
    )
    response = await search.transport.perform_request(
        "POST", f"/{alias}/_bulk", params=BULK_PARAMS, body=body,
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    if isinstance(response, bytes | str):
        response = msgspec.json.decode(response)
    items: list[dict[str, Any]] = [next(iter(item.values())) for item in response["items"]]
    return items


async def test_a_concrete_index_named_like_the_alias_is_refused_with_the_fix(
    search: AsyncOpenSearch, alias: str
) -> None:
    await search.indices.create(index=alias, body=_BARE)  # `curl -X PUT /orders`
    with pytest.raises(FatalError, match="searchsync index adopt") as raised:
        await ensure_index(search, alias, retention_seconds=3600)
    assert isinstance(raised.value, index_lib.IndexLayoutError)
    message = str(raised.value)
    assert f"{alias} is a concrete index" in message
    assert f"{alias}_v1" in message  # what adopt will make of it
    assert await search.indices.exists(index=alias)  # refusing changes nothing
    assert not await search.indices.exists(index=f"{alias}_v1")


async def test_an_alias_over_two_indexes_without_a_write_index_is_refused(
    search: AsyncOpenSearch, alias: str
) -> None:
    names = await _alias_over_two(search, alias)
    with pytest.raises(FatalError, match="write index") as raised:
        await ensure_index(search, alias, retention_seconds=3600)
    assert isinstance(raised.value, index_lib.IndexLayoutError)
    message = str(raised.value)
    assert all(name in message for name in names)
    assert f"searchsync index adopt --write-index {names[-1]}" in message


async def test_an_alias_over_two_indexes_with_a_write_index_is_fine(
    search: AsyncOpenSearch, alias: str
) -> None:
    names = await _alias_over_two(search, alias)
    await search.indices.update_aliases(
        body={"actions": [{"add": {"index": names[1], "alias": alias, "is_write_index": True}}]}
    )
    assert await ensure_index(search, alias, retention_seconds=3600) == names[1]


async def test_an_alias_over_one_index_writes_there(search: AsyncOpenSearch, alias: str) -> None:
    await search.indices.create(index=f"{alias}_v3", body=_BARE)
    await search.indices.put_alias(index=f"{alias}_v3", name=alias)
    assert await ensure_index(search, alias, retention_seconds=3600) == f"{alias}_v3"


async def test_consumers_starting_together_all_find_the_alias_their_first_made(
    search: AsyncOpenSearch, alias: str
) -> None:
    """Seen in CI: three consumers started at once, one exited 1 calling the brand-new
    alias "a concrete index". It asked "is there an alias?" (no), then "is there
    anything named so?" (yes: the alias, made meanwhile by another consumer)."""
    env = require(("OS_HOST", "OS_PORT"))
    hosts = [{"host": env["OS_HOST"], "port": int(env["OS_PORT"])}]

    async def start(delay: float, name: str) -> str:
        client = AsyncOpenSearch(hosts=hosts, timeout=30, max_retries=0)
        try:
            await asyncio.sleep(delay)
            return await ensure_index(client, name, retention_seconds=3600)
        finally:
            await client.close()

    # staggered starts cover the whole time the first create takes, so some caller
    # asks its two questions on either side of the alias appearing
    for round_ in range(4):
        name = f"{alias}_r{round_}"
        try:
            got = await asyncio.gather(*(start(i * 0.015, name) for i in range(16)))
            assert set(got) == {f"{name}_v1"}
        finally:
            await search.indices.delete(index=f"{name}_v*", expand_wildcards="all")


async def test_new_indexes_are_created_as_the_alias_write_index(
    search: AsyncOpenSearch, alias: str
) -> None:
    assert await ensure_index(search, alias, retention_seconds=3600) == f"{alias}_v1"
    aliases = await search.indices.get_alias(name=alias)
    assert aliases == {f"{alias}_v1": {"aliases": {alias: {"is_write_index": True}}}}
    # a second start (or a second consumer) changes nothing
    assert await ensure_index(search, alias, retention_seconds=3600) == f"{alias}_v1"
    assert await search.indices.get_alias(name=alias) == aliases


async def test_the_node_answers_bad_layouts_with_what_layout_problem_recognises(
    search: AsyncOpenSearch, alias: str
) -> None:
    """The per-item answers quoted in layout_problem's docstring, on the real node."""
    await search.indices.create(index=alias, body=_BARE)
    upsert, delete = await _bulk(search, alias)
    assert (upsert["status"], upsert["error"]["type"]) == (404, "index_not_found_exception")
    assert upsert["error"]["reason"] == (
        f"no such index [{alias}] and [require_alias] request flag is [true] "
        f"and [{alias}] is not an alias"
    )
    # require_alias is not checked for deletes: they land in the concrete index
    assert delete == {"status": 404}
    problem = index_lib.layout_problem(upsert["status"], upsert["error"]["type"],
                                       upsert["error"]["reason"])  # fmt: skip
    assert problem is not None and "searchsync index adopt" in problem

    await search.indices.delete(index=alias)
    await _alias_over_two(search, alias)
    for item in await _bulk(search, alias):
        assert (item["status"], item["error"]["type"]) == (400, "illegal_argument_exception")
        assert item["error"]["reason"] == (
            f"no write index is defined for alias [{alias}]. The write index may be "
            "explicitly disabled using is_write_index=false or the alias points to "
            "multiple indices without one being designated as a write index"
        )
        problem = index_lib.layout_problem(item["status"], item["error"]["type"],
                                           item["error"]["reason"])  # fmt: skip
        assert problem is not None and "--write-index" in problem


async def test_a_consumer_started_on_a_concrete_index_exits_1_naming_the_fix(
    tmp_path: Path,
) -> None:
    """At start a consumer runs ensure_index: the layout error is fatal (exit 1, logged)."""
    stack = await make_stack(partitions=2)
    try:
        await stack.search.indices.create(index=stack.alias, body=_BARE)
        proc = ConsumerProcess(stack.consumer_env(), "cons-layout", tmp_path)
        try:
            assert await asyncio.to_thread(proc.wait, 30) == 1
        finally:
            proc.ensure_dead()
        log = proc.log()
        assert "Consumer cannot continue" in log and f"{stack.alias} is a concrete index" in log
        assert "`searchsync index adopt`" in log
    finally:
        await cleanup(stack)
