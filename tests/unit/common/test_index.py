"""common/index.py: the index definition covers the view and outlives stream retention."""

from __future__ import annotations

from common.entries import VERSION_FIELD
from common.index import VIEW_PROPERTIES, index_body, versioned_name

# runbook §5, "Materialize View Schema"
VIEW_COLUMNS = [
    "order_id", "order_number", "order_status", "store_id", "customer_id",
    "delivery_window_start", "delivery_window_end", "order_total_amount", "customer_name",
    "customer_email", "customer_address", "store_name", "store_zone", "store_address",
    "assigned_courier_id", "delivery_task_status", "delivery_eta", "effective_updated_at",
]  # fmt: skip


def test_every_view_column_and_the_version_are_mapped() -> None:
    assert set(VIEW_PROPERTIES) == {*VIEW_COLUMNS, VERSION_FIELD}
    assert VIEW_PROPERTIES[VERSION_FIELD] == {"type": "long"}


def test_runbook_types() -> None:
    types = {name: spec["type"] for name, spec in VIEW_PROPERTIES.items()}
    for name in ("order_id", "order_number", "order_status", "customer_email", "store_zone"):
        assert types[name] == "keyword"
    for name in ("customer_name", "customer_address", "store_name", "store_address"):
        assert types[name] == "text"
    for name in ("delivery_window_start", "delivery_window_end", "delivery_eta"):
        assert types[name] == "date"
    assert types["order_total_amount"] == "float"
    assert "keyword" in VIEW_PROPERTIES["customer_name"]["fields"]


def test_settings() -> None:
    body = index_body(retention_seconds=86_400, replicas=1)
    index = body["settings"]["index"]
    assert index["gc_deletes"] == "86400s"
    assert index["refresh_interval"] == "1s"
    assert index["number_of_replicas"] == 1
    assert body["mappings"]["dynamic"] == "false"
    assert index_body(retention_seconds=60)["settings"]["index"]["number_of_replicas"] == 0


def test_versioned_name() -> None:
    assert versioned_name("orders") == "orders_v1"
    assert versioned_name("orders", 3) == "orders_v3"
