"""The devstack's OpenSearch node is real 2.19.6 and has the features searchsync relies on.

Runs against the node recorded in .devstack/env (`source .devstack/env` sets OS_HOST and
OS_PORT; devstack/lib/opensearch.sh starts the node). An unreachable node is a failure,
never a skip. Talks plain HTTP with urllib so that it needs nothing beyond the stdlib.

Every index made here is named test_osnode_<random>_* and deleted afterwards: other tests
and the demo share the node.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

EXPECTED_VERSION = "2.19.6"
TIMEOUT_S = 30.0


class Node:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ndjson: list[dict[str, Any]] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (HTTP status, parsed JSON body or None)."""
        data: bytes | None = None
        headers = {"Accept": "application/json"}
        if ndjson is not None:
            data = "".join(json.dumps(line) + "\n" for line in ndjson).encode()
            headers["Content-Type"] = "application/x-ndjson"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        return status, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, payload = self.request(method, path, body, **kw)
        assert 200 <= status < 300, f"{method} {path} -> {status}: {payload}"
        return payload


@pytest.fixture(scope="module")
def node() -> Node:
    host = os.environ.get("OS_HOST")
    port = os.environ.get("OS_PORT")
    if not host or not port:
        pytest.fail(
            "OS_HOST/OS_PORT are not set: start the devstack and `source .devstack/env`",
            pytrace=False,
        )
    n = Node(f"http://{host}:{port}")
    try:
        n.request("GET", "/")
    except (urllib.error.URLError, OSError) as err:
        pytest.fail(f"OpenSearch at {n.base_url} is unreachable: {err}", pytrace=False)
    return n


@pytest.fixture
def prefix(node: Node) -> Iterator[str]:
    """A unique index-name prefix; every index under it is deleted after the test."""
    name = f"test_osnode_{uuid.uuid4().hex[:12]}"
    yield name
    status, indices = node.request("GET", f"/_cat/indices/{name}*?format=json&h=index")
    if status == 200 and indices:
        names = ",".join(sorted(i["index"] for i in indices))
        node.ok("DELETE", f"/{names}")


def make_index(
    node: Node,
    name: str,
    properties: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    node.ok(
        "PUT",
        f"/{name}",
        {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0, **(settings or {})},
            "mappings": {"properties": properties or {}},
        },
    )


def bulk_index(node: Node, index: str, docs: dict[str, dict[str, Any]]) -> None:
    lines: list[dict[str, Any]] = []
    for doc_id, doc in docs.items():
        lines += [{"index": {"_index": index, "_id": doc_id}}, doc]
    result = node.ok("POST", "/_bulk?refresh=true", ndjson=lines)
    assert result["errors"] is False, result


def count(node: Node, index: str) -> int:
    return int(node.ok("GET", f"/{index}/_count")["count"])


def test_root_reports_version(node: Node) -> None:
    info = node.ok("GET", "/")
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"] == EXPECTED_VERSION


def test_cluster_health_yellow_or_green(node: Node) -> None:
    health = node.ok("GET", "/_cluster/health?wait_for_status=yellow&timeout=30s")
    assert health["status"] in ("yellow", "green"), health
    assert health["number_of_nodes"] >= 1


def test_modules_loaded(node: Node) -> None:
    plugins = node.ok("GET", "/_cat/plugins?format=json&h=component")
    components = {p["component"] for p in plugins}
    for cls in (
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.painless.PainlessPlugin",
    ):
        assert cls in components, f"{cls} not loaded: {sorted(components)}"


def test_painless_execute(node: Node) -> None:
    result = node.ok("POST", "/_scripts/painless/_execute", {"script": {"source": "1 + 1"}})
    assert result["result"] == "2"


def test_painless_update_script(node: Node, prefix: str) -> None:
    index = f"{prefix}_upd"
    make_index(node, index, {"stock": {"type": "integer"}})
    bulk_index(node, index, {"sku-1": {"stock": 3}})
    node.ok(
        "POST",
        f"/{index}/_update/sku-1?refresh=true",
        {
            "script": {
                "lang": "painless",
                "source": "ctx._source.stock += params.delta",
                "params": {"delta": 4},
            },
        },
    )
    assert node.ok("GET", f"/{index}/_doc/sku-1")["_source"]["stock"] == 7


def test_reindex(node: Node, prefix: str) -> None:
    src, dst = f"{prefix}_src", f"{prefix}_dst"
    make_index(node, src, {"name": {"type": "text"}})
    make_index(node, dst, {"name": {"type": "text"}})
    bulk_index(node, src, {str(i): {"name": f"product {i}"} for i in range(25)})
    result = node.ok(
        "POST",
        "/_reindex?refresh=true",
        {
            "source": {"index": src},
            "dest": {"index": dst},
        },
    )
    assert result["created"] == 25 and not result["failures"], result
    assert count(node, dst) == 25


def test_alias_swap_is_atomic(node: Node, prefix: str) -> None:
    alias, old, new = f"{prefix}_live", f"{prefix}_v1", f"{prefix}_v2"
    make_index(node, old)
    make_index(node, new)
    bulk_index(node, old, {"a": {"gen": 1}})
    bulk_index(node, new, {"a": {"gen": 2}, "b": {"gen": 2}})
    node.ok("POST", "/_aliases", {"actions": [{"add": {"index": old, "alias": alias}}]})
    assert count(node, alias) == 1

    node.ok(
        "POST",
        "/_aliases",
        {
            "actions": [
                {"remove": {"index": old, "alias": alias}},
                {"add": {"index": new, "alias": alias}},
            ]
        },
    )
    assert set(node.ok("GET", f"/_alias/{alias}")) == {new}
    assert count(node, alias) == 2
    assert node.ok("GET", f"/{alias}/_doc/a")["_source"]["gen"] == 2

    # a swap naming a missing index fails as a whole and leaves the alias alone
    status, _ = node.request(
        "POST",
        "/_aliases",
        {
            "actions": [
                {"remove": {"index": new, "alias": alias}},
                {"add": {"index": f"{prefix}_missing", "alias": alias}},
            ]
        },
    )
    assert status == 404
    assert set(node.ok("GET", f"/_alias/{alias}")) == {new}


def test_delete_by_query(node: Node, prefix: str) -> None:
    index = f"{prefix}_dbq"
    make_index(node, index, {"store": {"type": "keyword"}})
    bulk_index(
        node,
        index,
        {
            "1": {"store": "north"},
            "2": {"store": "south"},
            "3": {"store": "north"},
        },
    )
    result = node.ok(
        "POST",
        f"/{index}/_delete_by_query?refresh=true",
        {
            "query": {"term": {"store": "north"}},
        },
    )
    assert result["deleted"] == 2 and not result["failures"], result
    assert count(node, index) == 1
    status, _ = node.request("GET", f"/{index}/_doc/2")
    assert status == 200


def test_external_versioning(node: Node, prefix: str) -> None:
    index = f"{prefix}_ver"
    make_index(node, index)
    doc = f"/{index}/_doc/sku-9"
    status, _ = node.request("PUT", f"{doc}?version=5&version_type=external", {"v": 5})
    assert status == 201

    status, body = node.request("PUT", f"{doc}?version=4&version_type=external", {"v": 4})
    assert status == 409, body
    assert body["error"]["type"] == "version_conflict_engine_exception"

    # plain external also rejects an equal version; external_gte accepts it
    status, _ = node.request("PUT", f"{doc}?version=5&version_type=external", {"v": 5})
    assert status == 409
    status, body = node.request("PUT", f"{doc}?version=5&version_type=external_gte", {"v": 55})
    assert status == 200, body
    status, _ = node.request("PUT", f"{doc}?version=4&version_type=external_gte", {"v": 4})
    assert status == 409

    got = node.ok("GET", doc)
    assert got["_version"] == 5 and got["_source"] == {"v": 55}


def test_full_text_match(node: Node, prefix: str) -> None:
    index = f"{prefix}_ft"
    # asciifolding comes from the analysis-common module, the english analyzer stems
    make_index(
        node,
        index,
        {"title": {"type": "text", "analyzer": "folded_english"}, "sku": {"type": "keyword"}},
        {
            "analysis": {
                "analyzer": {
                    "folded_english": {
                        "type": "custom",
                        "tokenizer": "standard",
                        "filter": ["lowercase", "asciifolding", "porter_stem"],
                    }
                }
            }
        },
    )
    bulk_index(
        node,
        index,
        {
            "1": {"title": "Crème Brûlée Desserts", "sku": "d-1"},
            "2": {"title": "Organic Green Apples", "sku": "f-2"},
        },
    )
    hits = node.ok(
        "POST",
        f"/{index}/_search",
        {
            "query": {"match": {"title": "creme brulee dessert"}},
        },
    )["hits"]["hits"]
    assert [h["_source"]["sku"] for h in hits] == ["d-1"]

    hits = node.ok(
        "POST",
        f"/{index}/_search",
        {
            "query": {"match": {"title": {"query": "green apple", "operator": "and"}}},
        },
    )["hits"]["hits"]
    assert [h["_source"]["sku"] for h in hits] == ["f-2"]


def test_bulk_of_1000_orders_through_alias_with_versions(node: Node, prefix: str) -> None:
    """The Foundation contract: the project's own mapping, an alias, external versions."""
    from searchsync.common.index import index_body

    index, alias = f"{prefix}_v1", f"{prefix}_orders"
    node.ok("PUT", f"/{index}", index_body(retention_seconds=3600))
    node.ok("POST", "/_aliases", {"actions": [{"add": {"index": index, "alias": alias}}]})
    names = ["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]
    lines: list[dict[str, Any]] = []
    for n in range(1000):
        lines += [
            {"index": {"_index": alias, "_id": f"order:FM-{n}", "version": 10,
                       "version_type": "external_gte"}},
            {"order_id": f"order:FM-{n}", "customer_name": names[n % 4],
             "order_total_amount": n / 4, "sync_version": 10},
        ]  # fmt: skip
    result = node.ok("POST", "/_bulk?refresh=true", ndjson=lines)
    assert result["errors"] is False
    assert [item["index"]["status"] for item in result["items"]] == [201] * 1000
    assert count(node, alias) == 1000

    hits = node.ok(
        "POST",
        f"/{alias}/_search",
        {"query": {"match": {"customer_name": "hopper"}}, "size": 0,
         "track_total_hits": True},
    )  # fmt: skip
    assert hits["hits"]["total"]["value"] == 250

    doc = f"/{alias}/_doc/order:FM-7"
    status, body = node.request("PUT", f"{doc}?version=9&version_type=external_gte", {"v": 9})
    assert status == 409, body  # older than what is there
    status, body = node.request("PUT", f"{doc}?version=10&version_type=external_gte", {"v": 10})
    assert status == 200, body  # equal: accepted (a replay is harmless)
    status, body = node.request("DELETE", f"{doc}?version=9&version_type=external_gte")
    assert status == 409, body  # an older delete cannot remove a newer document
    status, body = node.request("DELETE", f"{doc}?version=11&version_type=external_gte")
    assert status == 200 and body["result"] == "deleted", body
    status, body = node.request("PUT", f"{doc}?version=10&version_type=external_gte", {"v": 10})
    assert status == 409, body  # the delete's tombstone keeps its version (gc_deletes)
