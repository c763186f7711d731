"""The views file (common.views): parsing, the per-view settings, and every refusal naming
the file, the view and the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.config import ConfigError, load_settings
from searchsync.common.views import (
    CONFIG_VARIABLE,
    PER_VIEW_SETTINGS,
    ViewsError,
    load_deployment,
    parse_mapping,
    parse_view_argument,
    parse_views,
    view_properties,
)

SOURCE = "/etc/searchsync/views.toml"
ENV = {"REDIS_URL": "redis://r:6379/0", "OS_HOST": "os", "STREAM_PARTITIONS": "4"}


def orders(**extra: Any) -> dict[str, Any]:
    return {"name": "orders_mv", "key_column": "order_id", "index_alias": "orders", **extra}


def stores(**extra: Any) -> dict[str, Any]:
    return {"name": "stores_mv", "key_column": "store_id", "index_alias": "stores", **extra}


def refused(document: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ViewsError) as caught:
        parse_views(document, ENV if environ is None else environ, SOURCE)
    return str(caught.value)


def test_two_views_each_with_its_own_settings_over_the_environment() -> None:
    deployment = parse_views(
        {"views": [orders(), stores(partitions=2, max_batch_size=200, use_subscribe=False)]},
        ENV,
        SOURCE,
    )
    assert deployment.names == ("orders_mv", "stores_mv")
    first, second = deployment.views
    assert (first.key_column, first.os_index_name, first.stream_partitions) == (
        "order_id",
        "orders",
        4,  # the environment's STREAM_PARTITIONS is every view's default
    )
    assert (second.key_column, second.os_index_name, second.stream_partitions) == (
        "store_id",
        "stores",
        2,
    )
    assert (second.max_batch_size, second.use_subscribe) == (200, False)
    assert (first.max_batch_size, first.use_subscribe) == (1000, True)
    # service settings are the environment's, in every view
    assert {v.redis_url for v in deployment.views} == {"redis://r:6379/0"}
    assert {v.os_host for v in deployment.views} == {"os"}
    assert deployment.view("stores_mv") is second
    assert deployment.source == SOURCE


def test_choosing_a_view() -> None:
    one = parse_views({"views": [orders()]}, ENV, SOURCE)
    assert one.view(None).view_name == "orders_mv"
    two = parse_views({"views": [orders(), stores()]}, ENV, SOURCE)
    with pytest.raises(ViewsError, match=r"lists 2 views \(orders_mv, stores_mv\): name one"):
        two.view(None)
    with pytest.raises(ViewsError, match=r"no view 'x' in /etc/searchsync/views.toml"):
        two.view("x")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, "no views"),
        ({"views": []}, "no views"),
        ({"views": [orders()], "redis_url": "x"}, "unknown key 'redis_url'"),
        ({"views": ["orders"]}, "views[0]: expected a [[views]] table"),
        ({"views": [{"name": "v", "key_column": "k"}]}, "view 'v': the key 'index_alias' is"),
        ({"views": [{"key_column": "k", "index_alias": "a"}]}, "views[0]: the key 'name' is"),
        ({"views": [orders(colour="red")]}, "view 'orders_mv', key 'colour': unknown key"),
        # process-wide settings stay in the environment
        ({"views": [orders(redis_url="redis://x")]}, "key 'redis_url': unknown key"),
        ({"views": [orders(lease_ttl_seconds=3)]}, "key 'lease_ttl_seconds': unknown key"),
        ({"views": [orders(partitions=[1])]}, "key 'partitions': expected a text, number"),
        ({"views": [orders(), orders(index_alias="o2")]}, "key 'name': a second view"),
        ({"views": [orders(), stores(index_alias="orders")]}, "key 'index_alias': 'orders' is"),
        ({"views": [orders(mapping={"a": "keyword"})]}, "key 'mapping': field 'a'"),
        # empty would read as unset (the default view name!) to the environment's rules
        ({"views": [orders(name="")]}, "views[0], key 'name': empty"),
        ({"views": [orders(max_batch_size=" ")]}, "key 'max_batch_size': empty"),
    ],
)
def test_a_bad_file_names_the_file_the_view_and_the_key(
    document: dict[str, Any], expected: str
) -> None:
    message = refused(document)
    assert message.startswith(SOURCE) or "views file" in message
    assert expected in message


@pytest.mark.parametrize(
    ("key", "value", "variable"),
    [
        ("partitions", 0, "STREAM_PARTITIONS"),
        ("partitions", "eight", "STREAM_PARTITIONS"),
        ("key_column", "order-id", "KEY_COLUMN"),
        ("name", "1view", "VIEW_NAME"),
        ("index_alias", "Orders", "OS_INDEX_NAME"),
        ("max_batch_size", -1, "MAX_BATCH_SIZE"),
        ("use_subscribe", "perhaps", "USE_SUBSCRIBE"),
        ("subscribe_envelope", "json", "SUBSCRIBE_ENVELOPE"),
    ],
)
def test_a_bad_value_is_refused_as_the_environment_refuses_it(
    key: str, value: object, variable: str
) -> None:
    table = {**orders(), key: value}
    message = refused({"views": [table]})
    label = f"view {table['name']!r}"
    assert f"{SOURCE}: {label}, key '{key}': invalid {variable}=" in message
    # the same words as the environment's own error
    with pytest.raises(ConfigError) as direct:
        load_settings({variable: str(value).lower() if isinstance(value, bool) else str(value)})
    assert str(direct.value) in message


def test_a_pair_of_values_that_contradict_each_other_in_one_view() -> None:
    message = refused({"views": [orders(backpressure_threshold=10, backpressure_resume=20)]})
    assert "view 'orders_mv', key 'backpressure_resume': invalid BACKPRESSURE_RESUME" in message


def test_the_environment_cannot_also_name_a_view() -> None:
    message = refused({"views": [orders()]}, {**ENV, "VIEW_NAME": "orders_mv"})
    assert message.startswith("VIEW_NAME is set and SEARCHSYNC_CONFIG=")


def test_a_bad_service_setting_of_the_environment_is_named_without_a_key() -> None:
    message = refused({"views": [orders()]}, {**ENV, "OS_PORT": "http"})
    assert message.startswith(f"{SOURCE}: view 'orders_mv': invalid OS_PORT='http'")


def test_every_per_view_setting_is_a_setting() -> None:
    fields = set(load_settings({}).__struct_fields__)
    assert fields >= PER_VIEW_SETTINGS


@given(
    st.lists(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), min_size=1, max_size=6, unique=True
    ),
    st.integers(min_value=1, max_value=1024),
)
def test_any_set_of_distinct_views_parses_in_order(names: list[str], partitions: int) -> None:
    tables = [
        {"name": n, "key_column": "id", "index_alias": f"a_{n}", "partitions": partitions}
        for n in names
    ]
    deployment = parse_views({"views": tables}, {}, SOURCE)
    assert deployment.names == tuple(names)
    assert {v.stream_partitions for v in deployment.views} == {partitions}
    assert [v.os_index_name for v in deployment.views] == [f"a_{n}" for n in names]


@given(st.integers(min_value=-5, max_value=2000))
def test_partitions_out_of_range_are_refused_and_in_range_kept(partitions: int) -> None:
    document = {"views": [orders(partitions=partitions)]}
    if 1 <= partitions <= 1024:
        assert parse_views(document, {}, SOURCE).views[0].stream_partitions == partitions
    else:
        assert "key 'partitions': invalid STREAM_PARTITIONS" in refused(document, {})


# --- mappings --------------------------------------------------------------------------


def test_an_inline_mapping_and_a_relative_file_mapping(tmp_path: Path) -> None:
    source = str(tmp_path / "views.toml")
    inline = {"store_id": {"type": "keyword"}, "order_count": {"type": "integer"}}
    deployment = parse_views(
        {"views": [orders(mapping="stores.json"), stores(mapping=inline)]}, {}, source
    )
    first, second = deployment.views
    assert first.index_mapping == str(tmp_path / "stores.json")
    assert view_properties(second) == inline
    (tmp_path / "stores.json").write_text(json.dumps({"properties": inline}))
    assert view_properties(first) == inline
    assert view_properties(load_settings({})) is None  # the built-in orders mapping


@pytest.mark.parametrize(
    "value",
    [[], {}, "keyword", {"a": {}}, {"a": {"type": 3}}, {"a": "keyword"}, {"properties": {}}],
)
def test_a_mapping_must_give_every_field_a_type(value: object) -> None:
    with pytest.raises(ValueError):
        parse_mapping(value)


def test_an_unreadable_or_broken_mapping_file_names_index_mapping(tmp_path: Path) -> None:
    missing = load_settings({"INDEX_MAPPING": str(tmp_path / "none.json")})
    with pytest.raises(ConfigError, match=r"invalid INDEX_MAPPING=.*a readable JSON file"):
        view_properties(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match=r"a JSON file of index properties"):
        view_properties(load_settings({"INDEX_MAPPING": str(broken)}))


# --- the file on disk -------------------------------------------------------------------

VIEWS_TOML = """
[[views]]
name = "orders_mv"
key_column = "order_id"
index_alias = "orders"

[[views]]
name = "stores_mv"
key_column = "store_id"
index_alias = "stores"
partitions = 2
mapping = "stores.json"
"""


def test_load_reads_the_file_and_its_mapping_files(tmp_path: Path) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS_TOML)
    (tmp_path / "stores.json").write_text('{"store_id": {"type": "keyword"}}')
    deployment = load_deployment({CONFIG_VARIABLE: str(path)})
    assert deployment.names == ("orders_mv", "stores_mv")
    assert deployment.source == str(path)


def test_load_names_a_missing_mapping_file_with_the_view(tmp_path: Path) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS_TOML)
    with pytest.raises(ViewsError, match=r"view 'stores_mv', key 'mapping': invalid INDEX_MAPP"):
        load_deployment({CONFIG_VARIABLE: str(path)})


def test_load_refuses_bad_toml_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "views.toml"
    path.write_text("[[views]\nname = 1")
    with pytest.raises(ViewsError, match=rf"{path}: not valid TOML"):
        load_deployment({CONFIG_VARIABLE: str(path)})
    with pytest.raises(ViewsError, match=r"SEARCHSYNC_CONFIG=.*cannot read the views file"):
        load_deployment({CONFIG_VARIABLE: str(tmp_path / "absent.toml")})


def test_without_a_file_the_environment_is_the_one_view() -> None:
    deployment = load_deployment({"VIEW_NAME": "v", "KEY_COLUMN": "k", "OS_INDEX_NAME": "a"})
    assert deployment.source is None
    assert deployment.names == ("v",)
    assert deployment.view(None).key_column == "k"
    assert deployment.view(None) == load_settings(
        {"VIEW_NAME": "v", "KEY_COLUMN": "k", "OS_INDEX_NAME": "a"}
    )


def test_the_daemon_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCHSYNC_VIEW", raising=False)
    assert parse_view_argument("p", "doc", []) is None
    assert parse_view_argument("p", "doc", ["--view", "stores_mv"]) == "stores_mv"
    monkeypatch.setenv("SEARCHSYNC_VIEW", "orders_mv")
    assert parse_view_argument("p", "doc", []) == "orders_mv"
    with pytest.raises(SystemExit) as caught:
        parse_view_argument("p", "doc", ["--colour"])
    assert caught.value.code == 2


@pytest.mark.parametrize("module", ["producer", "consumer"])
def test_a_daemon_exits_2_naming_the_file_the_view_and_the_key(tmp_path: Path, module: str) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS_TOML.replace("partitions = 2", "partitions = 0"))
    result = subprocess.run(
        [sys.executable, "-m", f"searchsync.{module}.main"],
        env={CONFIG_VARIABLE: str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}: view 'stores_mv', key 'partitions': invalid STREAM_PARTITIONS='0'" in (
        result.stderr
    )


def test_the_producer_needs_view_when_the_file_lists_several(tmp_path: Path) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS_TOML)
    (tmp_path / "stores.json").write_text('{"store_id": {"type": "keyword"}}')
    result = subprocess.run(
        [sys.executable, "-m", "searchsync.producer.main"],
        env={CONFIG_VARIABLE: str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "lists 2 views (orders_mv, stores_mv): name one with --view" in result.stderr


def test_a_views_mapping_makes_its_index_body_with_the_version_field() -> None:
    from searchsync.common.entries import VERSION_FIELD
    from searchsync.common.index import VIEW_PROPERTIES, index_body

    fields = {"store_id": {"type": "keyword"}}
    mappings = index_body(retention_seconds=60, properties=fields)["mappings"]
    assert mappings["properties"] == {**fields, VERSION_FIELD: {"type": "long"}}
    assert index_body(retention_seconds=60)["mappings"]["properties"] == VIEW_PROPERTIES
