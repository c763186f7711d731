"""compose/cluster.yml, the clustered variant, merged into compose/docker-compose.yml as
``docker compose -f docker-compose.yml -f cluster.yml`` merges it, then checked against
the Compose Specification's JSON schema and against what a Redis Cluster of 3 masters +
3 replicas, a 3-node OpenSearch cluster and searchsync's settings need.

Structural only: no Docker engine runs here, so the variant was never started.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from searchsync.common.config import load_settings
from tests.unit.compose.deployment import (
    CLI_SERVICE,
    COMPOSE,
    SEARCHSYNC_SERVICES,
    compose_file,
)
from tests.unit.compose.test_compose_file import REQUIRED, schema_errors, unknown_variables

CLUSTER_FILE = COMPOSE / "cluster.yml"
REDIS_NODES = ("redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6")
OPENSEARCH_NODES = ("opensearch", "opensearch-2", "opensearch-3")
# sequences compose replaces in an override; every other sequence is appended to
_REPLACED = frozenset({"command", "entrypoint", "test"})


def merge(base: Any, override: Any, key: str = "") -> Any:
    """compose's merge of an override file: mappings key by key, ``command``,
    ``entrypoint`` and healthcheck ``test`` replaced, other sequences (volumes, ports)
    extended with what they lack; a scalar replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED:
        return [*base, *(item for item in override if item not in base)]
    return copy.deepcopy(override)


def cluster_override() -> dict[str, Any]:
    return compose_file(CLUSTER_FILE)


def merged() -> dict[str, Any]:
    result: dict[str, Any] = merge(compose_file(), cluster_override())
    return result


def shell(service: dict[str, Any], field: str = "command") -> str:
    """A ``sh -c`` service's script, as compose leaves it (``$$`` → ``$``)."""
    argv = service[field]
    assert argv[:2] == ["sh", "-c"], argv
    return str(argv[2]).replace("$$", "$")


def test_the_merge_is_compose_s() -> None:
    """The helper is not vacuous: nested maps merge, command is replaced, volumes append."""
    base = {"s": {"environment": {"A": "1"}, "command": ["x"], "volumes": ["a:/a"]}}
    over = {"s": {"environment": {"B": "2"}, "command": ["y"], "volumes": ["b:/b"]}}
    assert merge(base, over) == {
        "s": {"environment": {"A": "1", "B": "2"}, "command": ["y"], "volumes": ["a:/a", "b:/b"]}
    }


def test_the_override_and_the_merged_file_are_valid_compose_files() -> None:
    assert schema_errors(cluster_override()) == []
    assert schema_errors(merged()) == []


def test_six_redis_nodes_run_in_cluster_mode_with_their_own_data() -> None:
    services = merged()["services"]
    volumes = set()
    for name in REDIS_NODES:
        node = services[name]
        assert node["image"] == services["redis"]["image"]
        script = shell(node)
        assert "--cluster-enabled yes" in script and "--appendonly yes" in script
        assert "--cluster-config-file /data/nodes.conf" in script
        assert '--cluster-announce-hostname "$REDIS_NODE_HOST"' in script
        assert node["environment"]["REDIS_NODE_HOST"] == name  # what it announces
        # replicas log in to their master with the default user's password
        assert "masterauth %s" in script and "requirepass %s" in script
        data = [v for v in node["volumes"] if v.endswith(":/data")]
        assert len(data) == 1
        volumes.add(data[0])
        assert node["healthcheck"]["test"] == services["redis"]["healthcheck"]["test"]
        assert "ports" not in node  # reachable inside the compose network only
    assert len(volumes) == 6
    assert {v.split(":")[0] for v in volumes} <= set(merged()["volumes"])


def test_the_cluster_user_gets_the_commands_the_cluster_client_sends() -> None:
    """redis-py's cluster client asks CLUSTER SLOTS/SHARDS and COMMAND; the producer WAITs."""
    for name in REDIS_NODES:
        node = merged()["services"][name]
        rules = node["environment"]["CLUSTER_ACL"].split()
        assert {"+cluster|slots", "+cluster|shards", "+command", "+wait"} <= set(rules)
        assert '-e "/^user /s/\\$/ $CLUSTER_ACL/"' in shell(node)


def test_the_cluster_is_created_once_from_all_six_nodes() -> None:
    services = merged()["services"]
    job = services["redis-cluster-create"]
    assert job["restart"] == "no"
    assert job["depends_on"] == {n: {"condition": "service_healthy"} for n in REDIS_NODES}
    assert job["environment"]["REDIS_NODES"].split() == list(REDIS_NODES)
    script = shell(job, "entrypoint")
    assert "--cluster create $addresses --cluster-replicas 1 --cluster-yes" in script
    # a second `up` finds the cluster serving and changes nothing
    first_check = script.index("cluster_state:ok")
    assert first_check < script.index("--cluster create") and "exit 0; fi" in script
    assert REQUIRED.search(job["environment"]["REDISCLI_AUTH"])


@pytest.mark.parametrize("service", [*SEARCHSYNC_SERVICES, CLI_SERVICE])
def test_searchsync_waits_for_the_cluster_and_writes_to_it_waiting_for_a_replica(
    service: str,
) -> None:
    spec = merged()["services"][service]
    assert spec["depends_on"]["redis-cluster-create"] == {
        "condition": "service_completed_successfully"
    }
    environment = spec["environment"]
    assert unknown_variables(environment) == []
    values = {
        "OPENSEARCH_SEARCHSYNC_PASSWORD": "Sx-9sync",
        "OPENSEARCH_OPERATOR_PASSWORD": "Sx-9operator",
        "REDIS_SEARCHSYNC_PASSWORD": "0123abcd",
    }

    def interpolate(value: str) -> str:
        value = REQUIRED.sub(lambda m: values[m.group(1)], str(value))
        return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)

    settings = load_settings({name: interpolate(value) for name, value in environment.items()})
    assert settings.redis_cluster == "true"
    assert settings.redis_wait_replicas == 1
    assert settings.os_index_replicas == "1"
    assert settings.redis_url.endswith("@redis:6379/0")
    # every OpenSearch node, not node 1 alone: a lost node must not stop searchsync
    assert settings.opensearch_nodes() == tuple((host, 9200) for host in OPENSEARCH_NODES)


def test_three_opensearch_nodes_form_one_cluster() -> None:
    services = merged()["services"]
    names = set()
    for host in OPENSEARCH_NODES:
        node = services[host]
        environment = node["environment"]
        assert node["image"] == services["opensearch"]["image"]
        assert environment["cluster.name"] == "searchsync-os"
        assert environment["discovery.type"] == "zen"  # replaces the base's single-node
        assert environment["discovery.seed_hosts"].split(",") == list(OPENSEARCH_NODES)
        names.add(environment["node.name"])
        managers = environment["cluster.initial_cluster_manager_nodes"].split(",")
        assert REQUIRED.search(environment["OPENSEARCH_INITIAL_ADMIN_PASSWORD"])
        assert len([v for v in node["volumes"] if "/usr/share/opensearch/data" in v]) == 1
    assert names == set(managers) and len(names) == 3
    assert "ports" not in services["opensearch-2"] and "ports" not in services["opensearch-3"]
