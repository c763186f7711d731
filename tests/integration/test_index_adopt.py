"""``searchsync index adopt`` and ``searchsync index mapping-diff``, run as a user runs them.

The CLI runs as a subprocess with OS_HOST/OS_PORT/OS_INDEX_NAME in its environment,
against the devstack's real OpenSearch 2.19.6 node. The concrete index is made the
way the runbook's Force Resync makes it (``PUT /<alias>`` with no body). Every index
made here is named ``test_adopt_<random>*`` and deleted afterwards (the node is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from devstack.env import require
from searchsync.common.index import index_body, layout_problem
from searchsync.consumer.bulk import BULK_PARAMS

pytestmark = pytest.mark.timeout(180)

CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "searchsync"
DOCUMENTS = 1000
DELETED = range(0, DOCUMENTS, 100)  # 10 documents deleted at a newer version


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return require(("OS_HOST", "OS_PORT"))


@pytest.fixture
def search(env: dict[str, str]) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[{"host": env["OS_HOST"], "port": int(env["OS_PORT"])}], timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def alias(search: OpenSearch) -> Iterator[str]:
    name = f"test_adopt_{uuid.uuid4().hex[:10]}"
    yield name
    rows = search.cat.indices(index=f"{name}*", format="json", h="index", expand_wildcards="all")
    names = sorted(row["index"] for row in rows)
    if names:
        search.indices.delete(index=",".join(names))


def cli(
    env: dict[str, str], alias: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "index", *args],
        env={**os.environ, **env, "OS_INDEX_NAME": alias},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def run_json(env: dict[str, str], alias: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(env, alias, *args, "--json")
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def order(n: int, version: int) -> dict[str, Any]:
    return {"order_id": f"order:FM-{n}", "order_status": "PLACED",
            "order_total_amount": n / 4, "sync_version": version}  # fmt: skip


def bulk(
    search: OpenSearch, target: str, lines: list[dict[str, Any]], *, refresh: bool = True
) -> list[dict[str, Any]]:
    """Send ``lines`` to ``/<target>/_bulk`` as consumers do; one result per action."""
    body = "".join(json.dumps(line) + "\n" for line in lines)
    params = {**BULK_PARAMS, "refresh": "true"} if refresh else BULK_PARAMS
    response = search.transport.perform_request(
        "POST", f"/{target}/_bulk", params=params, body=body,
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    return [next(iter(item.values())) for item in response["items"]]


def upsert(n: int, version: int) -> list[dict[str, Any]]:
    action = {"_id": f"order:FM-{n}", "version": version, "version_type": "external_gte"}
    return [{"index": action}, order(n, version)]


def delete(n: int, version: int) -> list[dict[str, Any]]:
    return [{"delete": {"_id": f"order:FM-{n}", "version": version,
                        "version_type": "external_gte"}}]  # fmt: skip


def make_concrete(search: OpenSearch, alias: str, documents: int = DOCUMENTS) -> dict[str, int]:
    """The runbook's `curl -X PUT /<alias>`, 1,000 documents at external versions, 10
    deleted; returns every remaining document's _version."""
    search.indices.create(index=alias)
    lines: list[dict[str, Any]] = []
    for n in range(documents):
        lines += upsert(n, 1_000 + n)
    # through the index itself (not require_alias) the way the runbook's backfill writes
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = search.bulk(index=alias, body=body, refresh=True)
    assert response["errors"] is False
    deletes = [line for n in DELETED if n < documents for line in delete(n, 5_000 + n)]
    if deletes:
        assert search.bulk(index=alias, body=deletes, refresh=True)["errors"] is False
    return versions(search, alias)


def versions(search: OpenSearch, target: str) -> dict[str, int]:
    search.indices.refresh(index=target)
    hits = search.search(
        index=target, body={"query": {"match_all": {}}, "size": 10_000, "version": True,
                            "_source": False},
    )["hits"]["hits"]  # fmt: skip
    return {hit["_id"]: hit["_version"] for hit in hits}


def layout(search: OpenSearch, alias: str) -> tuple[list[str], dict[str, Any]]:
    """Every index named <alias>*, and what the alias points at."""
    rows = search.cat.indices(index=f"{alias}*", format="json", h="index", expand_wildcards="all")
    names = sorted(row["index"] for row in rows)
    aliases = (
        search.indices.get_alias(name=alias) if search.indices.exists_alias(name=alias) else {}
    )
    return names, aliases


def write_blocked(search: OpenSearch, index: str) -> bool:
    settings = search.indices.get_settings(index=index, flat_settings=True)
    return str(settings[index]["settings"].get("index.blocks.write", "false")) == "true"


def assert_adopted(search: OpenSearch, alias: str, before: dict[str, int], target: str) -> None:
    names, aliases = layout(search, alias)
    assert names == [target]  # the concrete index is gone
    assert aliases == {target: {"aliases": {alias: {"is_write_index": True}}}}
    assert not write_blocked(search, target)
    assert versions(search, alias) == before  # every document, with its _version


def test_adopt_keeps_every_document_and_version_and_writes_flow_again(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    before = make_concrete(search, alias)
    assert len(before) == DOCUMENTS - len(DELETED)
    # today's stall: an upsert through the name is refused as a layout problem
    (stalled,) = bulk(search, alias, upsert(1, 9_000))
    assert layout_problem(stalled["status"], stalled["error"]["type"],
                          stalled["error"]["reason"]) is not None  # fmt: skip

    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 0, report
    assert report["outcome"] == "adopted" and report["index"] == f"{alias}_v1"
    assert report["documents"] == len(before)
    assert report["steps"] == ["block_source", "clone", "wait", "verify", "swap", "unblock"]
    assert_adopted(search, alias, before, f"{alias}_v1")

    # a consumer's bulk (require_alias=true, external_gte) goes through the alias again
    results = bulk(search, alias, [
        *upsert(1, 9_000),  # newer than what is there
        *upsert(2, 1_002),  # equal: a replay, accepted
        *upsert(5_000, 9_000),  # a new document
        *delete(3, 9_000),
        *upsert(4, 999),  # older than what is there: refused
    ])  # fmt: skip
    assert [r["status"] for r in results] == [200, 200, 201, 200, 409]
    assert results[4]["error"]["type"] == "version_conflict_engine_exception"
    assert versions(search, alias)["order:FM-1"] == 9_000

    created = cli(env, alias, "create", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"alias": alias, "index": f"{alias}_v1"}


def test_adopt_twice_the_second_run_has_nothing_to_do(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    before = make_concrete(search, alias, documents=50)
    first = cli(env, alias, "adopt", "--yes")
    assert first.returncode == 0, first.stderr
    assert f"alias {alias} -> {alias}_v1 (write index)" in first.stdout
    assert "blocking writes" in first.stderr  # progress goes to stderr

    second = cli(env, alias, "adopt", "--yes")
    assert second.returncode == 0, second.stderr
    assert f"{alias} is already an alias (writes go to {alias}_v1)" in second.stdout
    assert_adopted(search, alias, before, f"{alias}_v1")


@pytest.mark.parametrize("stopped_after", ["block", "clone", "swap"])
def test_an_interrupted_adopt_is_finished_by_the_next_run(
    search: OpenSearch, env: dict[str, str], alias: str, stopped_after: str
) -> None:
    before = make_concrete(search, alias, documents=200)
    target = f"{alias}_v1"
    # the first steps by hand, as adopt does them, then "killed"
    search.indices.put_settings(index=alias, body={"index.blocks.write": True})
    if stopped_after in ("clone", "swap"):
        search.indices.clone(index=alias, target=target)
    if stopped_after == "swap":
        # request_timeout too: without it opensearch-py takes `timeout` as its own timeout
        search.cluster.health(
            index=target, wait_for_status="yellow", timeout="30s", request_timeout=40
        )
        search.indices.update_aliases(body={"actions": [
            {"remove_index": {"index": alias}},
            {"add": {"index": target, "alias": alias, "is_write_index": True}},
        ]})  # fmt: skip
        assert write_blocked(search, target)  # _clone copied the block

    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 0, report
    assert report["outcome"] == "adopted" and report["index"] == target
    expected = {
        "block": ["clone", "wait", "verify", "swap", "unblock"],
        "clone": ["wait", "verify", "swap", "unblock"],
        "swap": ["unblock"],
    }
    assert report["steps"] == expected[stopped_after]
    assert_adopted(search, alias, before, target)


def test_a_clone_of_a_source_that_took_writes_again_is_refused(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    make_concrete(search, alias, documents=20)
    search.indices.put_settings(index=alias, body={"index.blocks.write": True})
    search.indices.clone(index=alias, target=f"{alias}_v1")
    search.indices.put_settings(index=alias, body={"index.blocks.write": None})

    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 1 and report["outcome"] == "refused"
    assert f"curl -X DELETE /{alias}_v1" in report["message"]
    names, aliases = layout(search, alias)
    assert names == sorted([alias, f"{alias}_v1"]) and aliases == {}


def test_adopt_takes_the_next_generation_and_moves_other_aliases(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    for generation in (1, 4):  # leftovers of earlier resyncs, not behind any alias
        search.indices.create(index=f"{alias}_v{generation}")
    before = make_concrete(search, alias, documents=30)
    search.indices.put_alias(index=alias, name=f"{alias}_read")  # an alias of its own
    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 0 and report["index"] == f"{alias}_v5", report
    assert versions(search, alias) == before
    assert list(search.indices.get_alias(name=f"{alias}_read")) == [f"{alias}_v5"]


def test_without_yes_adopt_asks_and_a_no_changes_nothing(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    make_concrete(search, alias, documents=10)
    for answer in ("n\n", ""):  # "no", and end of input
        result = cli(env, alias, "adopt", stdin=answer)
        assert result.returncode == 1
        assert f"1. block writes on {alias}" in result.stdout
        assert "Proceed? [y/N]" in result.stdout
        assert "not confirmed: nothing was changed" in result.stderr
    assert layout(search, alias) == ([alias], {})
    assert not write_blocked(search, alias)

    result = cli(env, alias, "adopt", stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert layout(search, alias)[0] == [f"{alias}_v1"]


def test_adopt_with_nothing_named_like_the_alias_exits_1(env: dict[str, str], alias: str) -> None:
    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 1 and report["outcome"] == "nothing_to_adopt"
    assert "searchsync index create" in report["message"]


def test_write_index_repairs_an_alias_over_two_indexes(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    names = [f"{alias}_v1", f"{alias}_v2"]
    for name in names:
        search.indices.create(index=name)
    search.indices.update_aliases(
        body={"actions": [{"add": {"index": name, "alias": alias}} for name in names]}
    )
    created = cli(env, alias, "create")
    assert created.returncode == 4
    assert f"searchsync index adopt --write-index {alias}_v2" in created.stderr

    code, report = run_json(env, alias, "adopt", "--yes")
    assert code == 1 and report["outcome"] == "refused"
    assert "--write-index" in report["message"]

    code, report = run_json(env, alias, "adopt", "--yes", "--write-index", f"{alias}_v2")
    assert code == 0 and report["outcome"] == "write_index_set", report
    assert layout(search, alias)[1] == {
        f"{alias}_v1": {"aliases": {alias: {}}},
        f"{alias}_v2": {"aliases": {alias: {"is_write_index": True}}},
    }
    created = cli(env, alias, "create", "--json")
    assert created.returncode == 0 and json.loads(created.stdout)["index"] == f"{alias}_v2"


def test_adopt_while_a_writer_keeps_writing_loses_nothing(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    """A writer like a consumer (require_alias, external_gte) keeps going through the adopt:
    it retries items refused for the layout or the write block, and nothing is lost."""
    before = make_concrete(search, alias, documents=400)
    stop = threading.Event()
    seen: set[str] = set()
    unexpected: list[dict[str, Any]] = []
    written: list[int] = []

    def writer() -> None:
        pending: list[list[dict[str, Any]]] = []
        n = 0
        while not (stop.is_set() and not pending):
            if not stop.is_set():
                # deletes of old documents and upserts of new ones, one pair per round
                pending += [delete(n, 8_000 + n), upsert(10_000 + n, 8_000 + n)]
                written.append(n)
                n += 1
            ops, pending = pending, []
            results = bulk(search, alias, [line for op in ops for line in op], refresh=False)
            for op, result in zip(ops, results, strict=True):
                if result["status"] < 300 or (result["status"] == 404 and "error" not in result):
                    continue  # applied, or a delete of a document already gone
                kind = result["error"]["type"]
                if kind == "cluster_block_exception" or layout_problem(
                    result["status"], kind, result["error"]["reason"]
                ):
                    seen.add(kind)
                    pending.append(op)  # retried, never given up: as consumers do
                else:
                    unexpected.append(result)
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        code, report = run_json(env, alias, "adopt", "--yes")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(60)
    assert code == 0, report
    assert unexpected == []
    # upserts were refused until the swap, and everything during the write block
    assert seen == {"index_not_found_exception", "cluster_block_exception"}
    found = versions(search, alias)
    for n in written:
        assert f"order:FM-{n}" not in found  # every delete landed (before or after)
        assert found[f"order:FM-{10_000 + n}"] == 8_000 + n  # every upsert landed
    untouched = {k: v for k, v in before.items() if int(k.split("-")[1]) >= len(written)}
    assert {k: found[k] for k in untouched} == untouched


def test_mapping_diff_equal_exits_0(env: dict[str, str], alias: str) -> None:
    assert cli(env, alias, "create").returncode == 0
    result = cli(env, alias, "mapping-diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"index {alias}_v1 (alias {alias}) has the project's mapping" in result.stdout
    code, report = run_json(env, alias, "mapping-diff")
    assert code == 0 and report["equal"] is True and report["index"] == f"{alias}_v1"


def test_mapping_diff_names_what_differs_and_exits_1(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    body = index_body(retention_seconds=3600)
    properties = dict(body["mappings"]["properties"])
    properties["order_total_amount"] = {"type": "keyword"}  # changed type
    properties["note"] = {"type": "text"}  # added
    del properties["customer_email"]  # removed
    body["mappings"] = {"dynamic": "false", "properties": properties}
    body["aliases"] = {alias: {"is_write_index": True}}
    search.indices.create(index=f"{alias}_v1", body=body)

    result = cli(env, alias, "mapping-diff")
    assert result.returncode == 1, result.stderr
    assert "~ order_total_amount: project float, index keyword" in result.stdout
    assert "+ note: text  (only in the index)" in result.stdout
    assert "- customer_email: keyword  (only in the project)" in result.stdout
    code, report = run_json(env, alias, "mapping-diff")
    assert code == 1 and report["equal"] is False
    assert report["changed"] == {
        "order_total_amount": {"project": {"type": "float"}, "index": {"type": "keyword"}}
    }
    assert report["added"] == {"note": {"type": "text"}}
    assert report["removed"] == {"customer_email": {"type": "keyword"}}
    assert report["dynamic"] is None


def test_mapping_diff_of_a_concrete_index_is_a_layout_error(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    search.indices.create(index=alias)
    result = cli(env, alias, "mapping-diff")
    assert result.returncode == 4
    assert "searchsync index adopt" in result.stderr


def test_delete_tombstones_do_not_survive_the_adoption(
    search: OpenSearch, env: dict[str, str], alias: str
) -> None:
    """The limit adopt's plan warns about, measured: a clone starts without the shard's
    in-memory tombstones, so an upsert older than a delete made before is accepted."""
    make_concrete(search, alias, documents=10)  # order:FM-0 deleted at version 5000
    # straight to the concrete index (no require_alias), while the tombstone is in memory
    old = search.bulk(index=alias, body=upsert(0, 1_001))["items"][0]["index"]
    assert old["status"] == 409
    assert cli(env, alias, "adopt", "--yes").returncode == 0
    (after,) = bulk(search, alias, upsert(0, 1_001))
    assert after["status"] == 201  # the deleted document is back
