"""USE_SUBSCRIBE=false end to end: changes that leave effective_updated_at alone reach the index.

Services: real PostgreSQL (a private FreshMart schema seeded by
tests.support.mzemu.seed_orders: orders FM-1001…FM-1006, customers C-1 (odd
orders) and C-2 (even orders), two lines and one task per order), a private
emulator and redis-server, the shared OpenSearch node under a private alias.
Processes: a real polling producer and a real consumer. Every check reads the
document OpenSearch holds (GET by id), not the streams.

Every triple is backdated by a day before the producer starts, so a poll that
read only rows whose ``effective_updated_at`` is recent would never see (a) or
(b): order lines are not part of ``effective_updated_at`` at all, and deleting a
task removes the newest of the timestamps it is the maximum of.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import NotFoundError, OpenSearch, TransportError

from tests.support.consumer import ConsumerProcess, service_env
from tests.support.producer import ProducerProcess, Stack, delete_order, wait_for

pytestmark = pytest.mark.timeout(180)

# A poll every 0.5 s and a consumer bulk every 0.5 s: a change is searchable within
# about a second; this leaves room for a loaded 2-core machine.
CHANGE_SECONDS = 20.0
TASK_FIELDS = ("assigned_courier_id", "delivery_task_status", "delivery_eta")


class PollingPipeline:
    """A Stack, a polling producer, one consumer and a private index alias."""

    def __init__(self) -> None:
        self.stack = Stack(orders=6, partitions=4)
        self.alias = f"test_poll_{uuid.uuid4().hex[:10]}"
        services = service_env()
        self.search = OpenSearch(
            hosts=[{"host": services["OS_HOST"], "port": int(services["OS_PORT"])}]
        )
        self.env = self.stack.env(
            OS_HOST=services["OS_HOST"],
            OS_PORT=services["OS_PORT"],
            OS_INDEX_NAME=self.alias,
            USE_SUBSCRIBE="false",
            POLL_INTERVAL="0.5",
            LEASE_TTL_SECONDS="2",
            MAX_BATCH_AGE_SECONDS="0.5",
        )
        self.producer: ProducerProcess | None = None
        self.consumer: ConsumerProcess | None = None

    def start(self) -> None:
        self.producer = self.stack.producer(**self.env)
        self.consumer = ConsumerProcess(self.env, "c1", self.stack.log_dir)

    def document(self, key: str) -> dict[str, Any] | None:
        """The indexed document of ``key`` (realtime GET), None when there is none."""
        try:
            response = self.search.get(index=self.alias, id=key)
        except NotFoundError:  # no such document, or the consumer has not made the index yet
            return None
        except TransportError as error:
            if error.status_code == 503:  # the index just made: its shard is still recovering
                return None
            raise
        source: dict[str, Any] = response["_source"]
        return source

    def wait_document(self, key: str, check: Any, what: str) -> dict[str, Any] | None:
        """Until ``check(document)`` holds; AssertionError naming ``what``, the last
        document seen and the process logs after CHANGE_SECONDS."""
        seen: list[dict[str, Any] | None] = [None]

        def holds() -> bool:
            seen[0] = self.document(key)
            return bool(check(seen[0]))

        try:
            wait_for(holds, CHANGE_SECONDS, what, interval=0.2)
        except AssertionError as error:
            raise AssertionError(f"{error}\nindexed {key}: {seen[0]}\n{self.logs()}") from None
        return seen[0]

    def logs(self) -> str:
        """The processes' logs without the periodic buffer lines."""
        texts = [("producer", p.log()) for p in self.stack.producers]
        if self.consumer is not None:
            texts.append(("consumer", self.consumer.log()))
        parts = []
        for name, text in texts:
            lines = [line for line in text.splitlines() if "buffer" not in line.lower()]
            parts.append(f"--- {name}\n" + "\n".join(lines[-25:]))
        return "\n".join(parts)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.ensure_dead()
        self.search.indices.delete(index=f"{self.alias}_v*", ignore=[404])
        self.search.close()
        self.stack.close()


def prepare_data(stack: Stack) -> None:
    """Give FM-1004's task a courier and an ETA, then backdate every triple by a day."""
    with stack.pg() as pg, pg.transaction(), pg.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, %s)",
            [
                ("task:T-FM-1004", "assigned_to", "courier:K-7", "entity_ref"),
                ("task:T-FM-1004", "eta", "2026-01-01T10:40:00+00:00", "timestamp"),
            ],
        )
        cursor.execute(
            "UPDATE triples SET created_at = now() - interval '1 day', "
            "updated_at = now() - interval '1 day'"
        )


def replace_value(stack: Stack, subject: str, predicate: str, value: str) -> None:
    """Write one value as FreshMart writers do: delete the triple, insert the new one."""
    with stack.pg() as pg, pg.transaction():
        cursor = pg.execute(
            "DELETE FROM triples WHERE subject_id = %s AND predicate = %s RETURNING object_type",
            (subject, predicate),
        )
        row = cursor.fetchone()
        assert row is not None, f"no triple {subject} {predicate}"
        pg.execute(
            "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
            "VALUES (%s, %s, %s, %s)",
            (subject, predicate, value, row[0]),
        )


@pytest.fixture(scope="module")
def pipeline() -> Iterator[PollingPipeline]:
    built = PollingPipeline()
    try:
        prepare_data(built.stack)
        built.start()
        for number in range(1001, 1007):
            built.wait_document(f"order:FM-{number}", bool, f"FM-{number} indexed by the full poll")
        built.wait_document(
            "order:FM-1004",
            lambda d: d and d["assigned_courier_id"] == "courier:K-7",
            "FM-1004's courier indexed",
        )
        yield built
    finally:
        built.close()


def test_a_line_quantity_change_updates_the_order_total(pipeline: PollingPipeline) -> None:
    before = pipeline.document("order:FM-1001")
    assert before is not None and before["order_total_amount"] == 7.5  # 1 × 2.50 + 2 × 2.50
    replace_value(pipeline.stack, "orderline:FM-1001-1", "quantity", "5")
    pipeline.wait_document(
        "order:FM-1001",
        lambda d: d and d["order_total_amount"] == 17.5,
        "(a) FM-1001's order_total_amount 17.5 after its line quantity 1 → 5",
    )


def test_b_deleting_a_delivery_task_empties_the_task_fields(pipeline: PollingPipeline) -> None:
    before = pipeline.document("order:FM-1004")
    assert before is not None and before["delivery_task_status"] == "pending"
    with pipeline.stack.pg() as pg, pg.transaction():
        pg.execute("DELETE FROM triples WHERE subject_id = 'task:T-FM-1004'")
    pipeline.wait_document(
        "order:FM-1004",
        lambda d: d and all(d[field] is None for field in TASK_FIELDS),
        "(b) FM-1004's task fields emptied after its task was deleted",
    )


def test_c_a_customer_address_change_reaches_every_order(pipeline: PollingPipeline) -> None:
    replace_value(pipeline.stack, "customer:C-1", "customer_address", "9 New Road")
    for number in (1001, 1003, 1005):  # C-1 placed the odd orders
        pipeline.wait_document(
            f"order:FM-{number}",
            lambda d: d and d["customer_address"] == "9 New Road",
            f"(c) FM-{number}'s customer_address after C-1 moved",
        )
    untouched = pipeline.document("order:FM-1002")
    assert untouched is not None and untouched["customer_address"] == "2 Main St"


def test_d_deleting_an_order_removes_its_document(pipeline: PollingPipeline) -> None:
    assert pipeline.document("order:FM-1006") is not None
    delete_order(pipeline.stack, "1006")
    pipeline.wait_document("order:FM-1006", lambda d: d is None, "(d) FM-1006's document deleted")
