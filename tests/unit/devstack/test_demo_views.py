"""devstack.demo's supervisord.conf copy: a producer per view of the views file, as README
"Several views" tells an operator to write them; and the devstack's views file loads."""

from __future__ import annotations

import configparser
from pathlib import Path

from devstack.demo import VIEWS_FILE, producer_per_view
from searchsync.common.views import CONFIG_VARIABLE, load_deployment

ROOT = Path(__file__).resolve().parents[3]


def test_a_producer_section_per_view_each_naming_its_view_port_and_log() -> None:
    text = producer_per_view((ROOT / "supervisord.conf").read_text(), ["orders_mv", "stores_mv"])
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    producers = [s for s in parser.sections() if s.startswith("program:producer")]
    assert producers == ["program:producer-orders_mv", "program:producer-stores_mv"]
    for number, view in enumerate(["orders_mv", "stores_mv"]):
        section = parser[f"program:producer-{view}"]
        assert section["command"] == f"searchsync-producer --view {view}"
        assert f'METRICS_PORT="{9400 + number}"' in section["environment"]
        assert section["stdout_logfile"].endswith(f"run/producer-{view}.log")
        assert section["stopwaitsecs"] == "10"  # the rest of [program:producer] kept
    assert parser["program:consumer"]["command"] == "searchsync-consumer"  # one fleet


def test_the_devstack_views_file_loads() -> None:
    deployment = load_deployment({CONFIG_VARIABLE: str(VIEWS_FILE)})
    assert deployment.names == ("orders_search_source_mv", "stores_search_source_mv")
    orders, stores = deployment.views
    assert (orders.os_index_name, stores.os_index_name) == ("orders", "stores")
    assert (stores.key_column, stores.stream_partitions) == ("store_id", 2)
    assert stores.index_mapping.endswith("devstack/views/stores.mapping.json")
