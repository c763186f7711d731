"""``searchsync dlq list | show | retry | purge`` against a running pipeline.

The acceptance case: an index whose mapping types ``assigned_courier_id`` as a
number rejects the one order that gets a courier (a string), so the consumer
dead-letters it; the mapping is fixed by a fresh index (``<alias>_v2`` with the
project's mapping, documents reindexed with their versions, the alias moved);
``searchsync dlq retry --all --yes`` then leaves ``searchsync verify`` clean and
the dlq empty, having written the key's current row (not the letter's document)
through the partition stream, at the timestamp it was read at.

Services and processes as in tests/e2e/test_pipeline.py: real PostgreSQL (a
private FreshMart schema), a private emulator and redis-server, the shared
OpenSearch node (a private alias), real producer, consumer and CLI processes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from searchsync.common.entries import (
    Change,
    DeadLetter,
    decode_dead_letter,
    decode_entry,
    encode_dead_letter,
)
from searchsync.common.index import VIEW_PROPERTIES, index_body
from searchsync.common.partition import partition_of
from tests.support.pipeline import CLI, Pipeline, pipeline_of
from tests.support.producer import set_status, wait_for

pytestmark = pytest.mark.timeout(240)

POISON = "order:FM-1002"
COURIER = "courier:K-7"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with pipeline_of(orders=3, partitions=2) as pipe:
        body = index_body(retention_seconds=3600)
        body["mappings"]["properties"] = {
            **VIEW_PROPERTIES,
            "assigned_courier_id": {"type": "long"},  # the mapping problem
        }
        body["aliases"] = {pipe.alias: {"is_write_index": True}}
        pipe.search.indices.create(index=f"{pipe.alias}_v1", body=body)
        pipe.stack.producer(**pipe.env())
        pipe.consumer("c1")
        wait_for(lambda: indexed(pipe) == 3, 60, "the 3 orders indexed", interval=0.3)
        yield pipe


def indexed(pipeline: Pipeline) -> int:
    pipeline.search.indices.refresh(index=pipeline.alias)
    return int(pipeline.search.count(index=pipeline.alias)["count"])


def cli(pipeline: Pipeline, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI with ``answer`` on its stdin (the confirmation prompt's answer)."""
    return subprocess.run(
        [str(CLI), *args],
        env={**os.environ, **pipeline.env()},
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dlq_ids(pipeline: Pipeline) -> list[str]:
    raw: Any = pipeline.stack.sync_redis().xrange(pipeline.stack.keys.dlq)
    return [entry_id.decode() for entry_id, _ in raw]


def fix_mapping(pipeline: Pipeline) -> None:
    """A fresh index with the project's mapping, documents and versions copied, alias moved."""
    search, alias = pipeline.search, pipeline.alias
    search.indices.create(index=f"{alias}_v2", body=index_body(retention_seconds=3600))
    search.reindex(
        body={
            "source": {"index": f"{alias}_v1"},
            "dest": {"index": f"{alias}_v2", "version_type": "external"},
        },
        refresh=True,
    )
    search.indices.update_aliases(
        body={
            "actions": [
                {"remove": {"index": f"{alias}_v1", "alias": alias}},
                {"add": {"index": f"{alias}_v2", "alias": alias, "is_write_index": True}},
            ]
        }
    )
    search.indices.delete(index=f"{alias}_v1")


def last_change(pipeline: Pipeline, key: str) -> tuple[Change, int]:
    """The key's last change in its partition stream, and that stream's ``written`` count."""
    client = pipeline.stack.sync_redis()
    partition = partition_of(key.encode(), pipeline.stack.partitions)
    keys = pipeline.stack.keys
    raw: Any = client.xrevrange(keys.stream(partition))
    for _, fields in raw:
        decoded = decode_entry(fields)
        if isinstance(decoded, list):
            mine = [c for c in decoded if c.key == key.encode()]
            if mine:
                written: Any = client.hget(keys.counts(partition), keys.written_field(partition))
                return mine[0], int(written)
    raise AssertionError(f"no change of {key} in p{partition}")


def list_and_show(pipeline: Pipeline, letter_id: str) -> None:
    """``dlq list`` and ``dlq show``, human and JSON, with the one poison letter."""
    listed = cli(pipeline, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{pipeline.stack.keys.dlq}: 1 dead letter (newest first)"
    assert lines[2].startswith(letter_id) and POISON in lines[2]
    assert "mapper_parsing_exception" in lines[2]
    as_json = json.loads(cli(pipeline, "dlq", "list", "--json").stdout)
    assert as_json["total"] == 1 and as_json["order"] == "newest first"
    (row,) = as_json["letters"]
    assert row["id"] == letter_id and row["key"] == POISON and row["op"] == "upsert"
    assert row["partition"] == partition_of(POISON.encode(), 2)
    assert row["source"].startswith(f"p{row['partition']}/")

    shown = cli(pipeline, "dlq", "show", letter_id)
    assert shown.returncode == 0, shown.stderr
    assert f'  "assigned_courier_id": "{COURIER}",' in shown.stdout.splitlines()
    shown_json = json.loads(cli(pipeline, "dlq", "show", letter_id, "--json").stdout)
    assert shown_json["document_format"] == "json"
    assert shown_json["document"]["assigned_courier_id"] == COURIER
    unknown = cli(pipeline, "dlq", "show", "1-0")
    assert unknown.returncode == 1 and "no letter 1-0" in unknown.stderr


def test_a_poison_document_is_retried_once_the_mapping_is_fixed(pipeline: Pipeline) -> None:
    with pipeline.stack.pg() as pg:
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES ('task:T-FM-1002', 'assigned_to', %s, 'entity_ref')",
            (COURIER,),
        )
    wait_for(lambda: dlq_ids(pipeline), 60, "the poison document dead-lettered", interval=0.3)
    (letter_id,) = dlq_ids(pipeline)

    list_and_show(pipeline, letter_id)

    # the row changes again while the mapping still rejects it: a second, newer letter
    set_status(pipeline.stack, POISON, "delivered")
    wait_for(lambda: len(dlq_ids(pipeline)) == 2, 60, "a second letter", interval=0.3)
    newest_id = dlq_ids(pipeline)[1]
    raw: Any = pipeline.stack.sync_redis().xrange(pipeline.stack.keys.dlq)
    letter = decode_dead_letter(raw[1][1])
    assert b'"order_status":"delivered"' in (letter.doc or b"")

    drift = pipeline.verify(settle=0)
    assert not drift["ok"] and list(drift["different"]) == [POISON]

    declined = cli(pipeline, "dlq", "retry", "--all", answer="n\n")
    assert declined.returncode == 1 and "Proceed? [y/N]" in declined.stdout
    assert "2 not_confirmed" in declined.stdout
    assert dlq_ids(pipeline) == [letter_id, newest_id]
    _, written_before = last_change(pipeline, POISON)

    fix_mapping(pipeline)
    retried = cli(pipeline, "dlq", "retry", "--all", "--yes")
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    for line_id in (letter_id, newest_id):  # one key, one write, both letters settled
        assert f"{line_id} " in retried.stdout
    assert retried.stdout.count("retried: current row appended") == 2
    assert dlq_ids(pipeline) == []

    # the key's current row, at the timestamp it was read at, as the live path encodes it
    change, written_after = last_change(pipeline, POISON)
    assert change.ts >= letter.ts and written_after == written_before + 1
    assert change.doc == (letter.doc or b"").replace(
        b'"sync_version":%d}' % letter.ts, b'"sync_version":%d}' % change.ts
    )
    high_water: Any = pipeline.stack.sync_redis().zscore(pipeline.stack.keys.high_water, "ts")
    assert int(high_water) >= change.ts

    report = pipeline.verify(settle=20)  # re-reads what differs until the consumer applied it
    assert report["ok"], (report, pipeline.logs())


def test_retry_outcomes_and_purge(pipeline: Pipeline) -> None:
    client = pipeline.stack.sync_redis()
    dlq = pipeline.stack.keys.dlq
    client.delete(dlq)
    with pipeline.stack.pg() as pg:  # FM-1003 gets two live rows: the producer's own letter
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) VALUES "
            "('task:T2-FM-1003', 'task_of_order', 'order:FM-1003', 'entity_ref'), "
            "('task:T2-FM-1003', 'task_status', 'assigned', 'string')"
        )
    wait_for(lambda: dlq_ids(pipeline), 60, "the key violation dead-lettered", interval=0.3)
    (violation,) = dlq_ids(pipeline)
    gone: Any = client.xadd(
        dlq,
        encode_dead_letter(  # type: ignore[arg-type]
            DeadLetter(ts=1, op=b"u", key=b"order:FM-9999", reason="test", source="p0/1-0")
        ),
    )
    marker: Any = client.xadd(
        dlq,
        encode_dead_letter(  # type: ignore[arg-type]
            DeadLetter(ts=1, op=b"p", key=b"", reason="above the high-water mark", source="p1/1-0")
        ),
    )

    gone, marker = gone.decode(), marker.decode()
    result = cli(pipeline, "dlq", "retry", violation, gone, marker, "1-0", "--yes", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    outcomes = {line["id"]: line["outcome"] for line in report["letters"]}
    assert outcomes == {
        violation: "still_bad",
        gone: "gone_from_view",
        marker: "not_retryable",
        "1-0": "not_found",
    }
    assert report["counts"]["gone_from_view"] == 1 and report["confirmed"] is True
    assert dlq_ids(pipeline) == [violation, marker]
    deleted, _ = last_change(pipeline, "order:FM-9999")
    assert deleted.doc is None and deleted.ts > 1

    # purge: declined changes nothing; --before an id takes what is older; then the rest
    declined = cli(pipeline, "dlq", "purge", answer="n\n")
    assert declined.returncode == 1 and "will delete 2 of the 2 letters" in declined.stdout
    assert dlq_ids(pipeline) == [violation, marker]
    before = json.loads(cli(pipeline, "dlq", "purge", "--before", marker, "--yes", "--json").stdout)
    assert (before["matched"], before["deleted"], before["remaining"]) == (1, 1, 1)
    assert dlq_ids(pipeline) == [marker]
    rest = cli(pipeline, "dlq", "purge", "--yes")
    assert rest.returncode == 0 and rest.stdout.startswith("deleted 1 dead letters")
    assert dlq_ids(pipeline) == []
    empty = cli(pipeline, "dlq", "list")
    assert empty.stdout.strip() == f"{dlq}: no dead letters"
