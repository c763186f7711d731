"""common/index.py: the index definition covers the view and outlives stream retention; the
write target behind the alias is checked; bulk answers that mean a bad layout are recognised;
mapping differences are named."""

from __future__ import annotations

from typing import Any

import pytest

from searchsync.common.entries import VERSION_FIELD
from searchsync.common.errors import FatalError
from searchsync.common.index import (
    VIEW_PROPERTIES,
    IndexLayoutError,
    Layout,
    generation_of,
    index_body,
    layout_of_aliases,
    layout_problem,
    mapping_diff,
    next_generation,
    render_mapping_diff,
    replicas_for,
    versioned_name,
    write_index,
)

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


# --- the write target ------------------------------------------------------------


# Verbatim per-item answers of OpenSearch 2.19.6 (tests/integration/test_index_layout.py
# checks them on the real node).
NOT_AN_ALIAS = (
    "no such index [orders] and [require_alias] request flag is [true] and [orders] is not an alias"
)
NO_WRITE_INDEX = (
    "no write index is defined for alias [orders]. The write index may be explicitly "
    "disabled using is_write_index=false or the alias points to multiple indices without "
    "one being designated as a write index"
)


def test_generations() -> None:
    assert generation_of("orders", "orders_v12") == 12
    assert generation_of("orders", "orders_v") is None
    assert generation_of("orders", "orders_v2_old") is None
    assert generation_of("orders", "orders2_v3") is None
    assert generation_of("a.b", "axb_v1") is None  # the alias is not a pattern
    assert next_generation("orders", []) == 1
    assert next_generation("orders", ["orders", "orders_v1", "orders_v10", "orders_v9x"]) == 11


def test_layout_of_aliases() -> None:
    response = {
        "orders_v2": {"aliases": {"orders": {"is_write_index": True}}},
        "orders_v1": {"aliases": {"orders": {}}},
        "orders_v3": {"aliases": {"orders": {"is_write_index": False}}},
    }
    layout = layout_of_aliases("orders", response)
    assert layout.members == {"orders_v1": None, "orders_v2": True, "orders_v3": False}
    assert list(layout.members) == ["orders_v1", "orders_v2", "orders_v3"]
    assert not layout.concrete and not layout.missing
    assert layout_of_aliases("orders", {}).missing


def test_write_index_of_a_working_alias() -> None:
    assert write_index(Layout("orders", members={"orders_v1": None})) == "orders_v1"
    assert write_index(Layout("orders", members={"orders_v1": True})) == "orders_v1"
    both = {"orders_v1": None, "orders_v2": True}
    assert write_index(Layout("orders", members=both)) == "orders_v2"


def test_a_concrete_index_is_a_layout_error_naming_adopt() -> None:
    layout = Layout("orders", concrete=True, versions=("orders_v1", "orders_v3"))
    with pytest.raises(IndexLayoutError) as raised:
        write_index(layout)
    assert isinstance(raised.value, FatalError)
    message = str(raised.value)
    assert message.startswith("orders is a concrete index, not an alias")
    assert "`searchsync index adopt` turns it into orders_v4 behind the alias orders" in message
    assert "without losing documents" in message


def test_an_alias_without_a_write_index_is_a_layout_error_naming_the_indexes() -> None:
    members: dict[str, bool | None] = {"orders_v1": None, "orders_v2": False, "orders_v10": None}
    with pytest.raises(IndexLayoutError) as raised:
        write_index(Layout("orders", members=members))
    message = str(raised.value)
    assert "points at 3 indexes (orders_v1, orders_v2, orders_v10)" in message
    assert "orders_v2 marked false" in message
    assert "`searchsync index adopt --write-index orders_v10`" in message  # the newest
    with pytest.raises(IndexLayoutError, match="its index orders_v1 is marked"):
        write_index(Layout("orders", members={"orders_v1": False}))


def test_nothing_named_like_the_alias_is_a_layout_error_naming_create() -> None:
    with pytest.raises(IndexLayoutError, match="`searchsync index create`"):
        write_index(Layout("orders"))


def test_layout_problem_recognises_the_measured_answers() -> None:
    concrete = layout_problem(404, "index_not_found_exception", NOT_AN_ALIAS)
    assert concrete is not None
    assert "`searchsync index adopt` turns it into orders_vN" in concrete
    assert "`searchsync index create`" in concrete  # the same answer when nothing exists
    missing = layout_problem(404, "index_not_found_exception", "no such index [orders]")
    assert missing is not None and "searchsync index create" in missing
    no_write = layout_problem(400, "illegal_argument_exception", NO_WRITE_INDEX)
    assert no_write is not None and "--write-index" in no_write and "alias orders" in no_write


@pytest.mark.parametrize(
    ("status", "error_type", "reason"),
    [
        (409, "version_conflict_engine_exception", "[k1]: version conflict"),
        (400, "mapper_parsing_exception", "failed to parse field [x]"),
        (400, "illegal_argument_exception", "Limit of total fields [1000] has been exceeded"),
        (403, "cluster_block_exception", "index [orders_v1] blocked by: [FORBIDDEN/8/index "
                                         "write (api)];"),
        (429, "es_rejected_execution_exception", "rejected execution"),
        (404, "index_not_found_exception", "no such index [orders] and something else"),
        (500, "index_not_found_exception", NOT_AN_ALIAS),
        (404, "", ""),
    ],
)  # fmt: skip
def test_layout_problem_leaves_every_other_answer_alone(
    status: int, error_type: str, reason: str
) -> None:
    assert layout_problem(status, error_type, reason) is None


# --- the mapping --------------------------------------------------------------------


def test_the_project_mapping_equals_itself_and_what_opensearch_echoes() -> None:
    project = index_body(retention_seconds=60)["mappings"]
    assert mapping_diff(project, project).equal
    # GET _mapping leaves the default date format out and may echo numbers as strings
    properties: dict[str, Any] = {
        name: ({"type": "date"} if spec["type"] == "date" else spec)
        for name, spec in VIEW_PROPERTIES.items()
    }
    properties["customer_name"] = {
        "type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": "256"}}
    }  # fmt: skip
    assert mapping_diff(project, {"dynamic": "false", "properties": properties}).equal


def test_mapping_diff_names_added_removed_and_changed_fields() -> None:
    project = index_body(retention_seconds=60)["mappings"]
    properties = dict(VIEW_PROPERTIES)
    properties["order_total_amount"] = {"type": "keyword"}
    properties["customer_name"] = {"type": "text"}  # its keyword sub-field is gone
    properties["delivery_eta"] = {"type": "date", "format": "epoch_millis"}
    properties["extra"] = {"properties": {"inner": {"type": "long"}}}
    del properties["store_zone"]
    diff = mapping_diff(project, {"properties": properties})
    assert not diff.equal
    assert diff.dynamic == ("false", "true")  # absent means OpenSearch's default
    assert dict(diff.added) == {"extra": {"type": "object"}, "extra.inner": {"type": "long"}}
    assert dict(diff.removed) == {
        "customer_name.keyword": {"type": "keyword", "ignore_above": "256"},
        "store_zone": {"type": "keyword"},
    }
    assert dict(diff.changed) == {
        "delivery_eta": ({"type": "date"}, {"type": "date", "format": "epoch_millis"}),
        "order_total_amount": ({"type": "float"}, {"type": "keyword"}),
    }
    lines = render_mapping_diff(diff, "orders", "orders_v1")
    assert lines[0] == "index orders_v1 (alias orders) differs from the project's mapping:"
    assert "  dynamic: project false, index true" in lines
    assert "  + extra.inner: long  (only in the index)" in lines
    assert "  - customer_name.keyword: keyword (ignore_above=256)  (only in the project)" in lines
    assert "  ~ order_total_amount: project float, index keyword" in lines
    assert "  ~ delivery_eta: project date, index date (format=epoch_millis)" in lines


def test_render_equal_mapping() -> None:
    project = index_body(retention_seconds=60)["mappings"]
    assert render_mapping_diff(mapping_diff(project, project), "orders", "orders_v1") == [
        "index orders_v1 (alias orders) has the project's mapping"
    ]


# --- OS_INDEX_REPLICAS: replicas_for ----------------------------------------------


@pytest.mark.parametrize(("data_nodes", "expected"), [(0, 0), (1, 0), (2, 1), (3, 1), (9, 1)])
def test_auto_replicas_are_one_on_a_cluster_and_none_on_a_single_node(
    data_nodes: int, expected: int
) -> None:
    assert replicas_for("auto", data_nodes) == expected


def test_a_whole_number_of_replicas_is_taken_as_given_whatever_the_cluster() -> None:
    assert replicas_for("0", 3) == 0
    assert replicas_for("2", 1) == 2  # yellow until a second node joins: the operator's call
    assert replicas_for(3, 5, live=1) == 3  # and it wins over the live index's count


def test_auto_keeps_a_live_indexs_higher_count_but_not_a_lower_one() -> None:
    assert replicas_for("auto", 3, live=2) == 2
    assert replicas_for("auto", 3, live=0) == 1
    assert replicas_for("auto", 1, live=0) == 0


@pytest.mark.parametrize("setting", ["one", "-1", ""])
def test_a_replicas_setting_neither_auto_nor_a_count_is_refused(setting: str) -> None:
    with pytest.raises(ValueError):
        replicas_for(setting, 3)
