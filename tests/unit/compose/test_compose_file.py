"""compose/docker-compose.yml against the Compose Specification's own JSON schema, and
against what the products and searchsync accept.

No services, no Docker engine (none runs here): the schema is the one the compose
project publishes (vendored in compose/schema/, its source in the README there); the
settings are the fields of searchsync's Settings; the products' facts are the ones
issues 13 and 15 list (pinned images, loopback ports, passwords, TLS).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import PurePosixPath
from typing import Any

import msgspec
import pytest
from jsonschema import Draft7Validator

from searchsync.common.config import Settings, load_settings
from searchsync.common.views import CONFIG_VARIABLE, VIEW_VARIABLE, load_deployment
from tests.unit.compose.deployment import (
    CLI_SERVICE,
    COMPOSE,
    COMPOSE_FILE,
    ROOT,
    SEARCHSYNC_SERVICES,
    compose_file,
)

SCHEMA = COMPOSE / "schema" / "compose-spec.json"
SETTINGS = frozenset(field.encode_name for field in msgspec.structs.fields(Settings))
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator().iter_errors(document)
    ]


def unknown_variables(environment: dict[str, Any]) -> list[str]:
    """Names neither the settings object nor common.views reads (a typo is silently
    ignored otherwise)."""
    known = SETTINGS | {CONFIG_VARIABLE, VIEW_VARIABLE}
    return sorted(name for name in environment if name not in known)


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    readme = (COMPOSE / "schema" / "README.md").read_text()
    assert "https://github.com/compose-spec/compose-spec" in readme
    assert re.search(r"`[0-9a-f]{40}`", readme), "the source commit is recorded"


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose_file()) == []


def test_the_schema_check_rejects_what_compose_would_reject() -> None:
    """The validator is not vacuous: mistakes compose itself refuses are found."""
    broken = copy.deepcopy(compose_file())
    broken["services"]["mz"]["healthcheck"]["start_period"] = ["120s"]
    broken["services"]["redis"]["imagee"] = "redis:7.2"
    broken["services"]["search-sync-consumer"]["stop_grace_period"] = ["15s"]
    errors = schema_errors(broken)
    assert any(e.startswith("services/mz/healthcheck/start_period") for e in errors), errors
    assert any("imagee" in e for e in errors), errors
    assert any(e.startswith("services/search-sync-consumer/stop_grace_period") for e in errors)


@pytest.mark.parametrize("service", [*SEARCHSYNC_SERVICES, CLI_SERVICE])
def test_every_variable_a_searchsync_service_gets_is_a_setting(service: str) -> None:
    environment = compose_file()["services"][service]["environment"]
    assert len(environment) >= 15
    assert unknown_variables(environment) == []


def test_an_unknown_variable_is_found() -> None:
    assert unknown_variables({"OS_HOST": "x", "OS_HOTS": "y", "REDIS_URI": "z"}) == [
        "OS_HOTS",
        "REDIS_URI",
    ]


@pytest.mark.parametrize(
    ("service", "user", "password"),
    [
        ("search-sync", "searchsync", "Sx-9sync"),
        ("search-sync-consumer", "searchsync", "Sx-9sync"),
        (CLI_SERVICE, "searchsync_operator", "Sx-9operator"),
    ],
)
def test_the_searchsync_environment_loads_as_settings(
    service: str, user: str, password: str
) -> None:
    """With compose's interpolation of a .env (every ${VAR:?…} given a value), the
    services' environment is one load_settings accepts: no exit 2 at start."""
    environment = compose_file()["services"][service]["environment"]
    values = {
        "OPENSEARCH_SEARCHSYNC_PASSWORD": "Sx-9sync",
        "OPENSEARCH_OPERATOR_PASSWORD": "Sx-9operator",
        "REDIS_SEARCHSYNC_PASSWORD": "0123abcd",
    }

    def interpolate(value: str) -> str:
        value = REQUIRED.sub(lambda m: values[m.group(1)], str(value))
        return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)

    settings = load_settings({name: interpolate(value) for name, value in environment.items()})
    assert settings.redis_url == "redis://searchsync:0123abcd@redis:6379/0"
    assert settings.os_use_ssl is True
    assert (settings.os_user, settings.os_password) == (user, password)


def test_secrets_come_from_the_env_file_it_documents() -> None:
    text = COMPOSE_FILE.read_text()
    required = set(REQUIRED.findall(text))
    assert required == {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "REDIS_SEARCHSYNC_PASSWORD",
        "OPENSEARCH_INITIAL_ADMIN_PASSWORD",
        "OPENSEARCH_SEARCHSYNC_PASSWORD",
        "OPENSEARCH_OPERATOR_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }
    example = (COMPOSE / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert listed == required
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()
    # no password written into the file itself
    assert not re.search(r"(PASSWORD|requirepass)\S*\s*[:=]\s*['\"]?[A-Za-z0-9]", text), text


def test_only_loopback_ports_are_published() -> None:
    services = compose_file()["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"mz", "opensearch", "prometheus", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_redis_requires_its_password_and_the_services_send_it() -> None:
    services = compose_file()["services"]
    command = " ".join(services["redis"]["command"])
    assert "requirepass" in command and "$$REDIS_PASSWORD" in command
    assert "--requirepass" not in command  # not on the command line: a file
    assert (
        services["redis"]["environment"]["REDISCLI_AUTH"]
        == services["redis"]["environment"]["REDIS_PASSWORD"]
    )
    # the services as the ACL user searchsync (test_compose_security.py: its rules)
    url = services["search-sync"]["environment"]["REDIS_URL"]
    assert url.startswith("redis://searchsync:${REDIS_SEARCHSYNC_PASSWORD:?")


def test_opensearch_runs_its_security_plugin_with_tls() -> None:
    services = compose_file()["services"]
    opensearch = services["opensearch"]
    flat = json.dumps(opensearch)
    assert "DISABLE_SECURITY_PLUGIN" not in flat
    assert "DISABLE_INSTALL_DEMO_CONFIG" not in flat
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" in opensearch["environment"]
    assert "https://localhost:9200" in " ".join(opensearch["healthcheck"]["test"])
    environment = services["search-sync"]["environment"]
    assert environment["OS_USE_SSL"] == "true"
    # the users it logs in as: test_compose_security.py


def test_opensearch_is_the_devstack_version() -> None:
    devstack = (ROOT / "devstack" / "lib" / "opensearch.sh").read_text()
    match = re.search(r"^OS_VERSION=(\S+)$", devstack, flags=re.MULTILINE)
    assert match is not None
    image = compose_file()["services"]["opensearch"]["image"]
    assert image == f"opensearchproject/opensearch:{match.group(1)}"


def test_materialize_is_pinned_starts_slowly_and_sends_no_telemetry() -> None:
    mz = compose_file()["services"]["mz"]
    repository, _, tag = mz["image"].partition(":")
    assert repository == "materialize/materialized"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag
    assert mz["healthcheck"]["start_period"]
    assert mz["environment"]["MZ_NO_TELEMETRY"]


def test_postgres_is_ready_on_tcp_not_the_init_socket() -> None:
    test = compose_file()["services"]["postgres"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    assert test[test.index("-h") + 1] == "127.0.0.1"


def test_the_app_image_is_built_once() -> None:
    services = compose_file()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["search-sync"]
    image = services["search-sync"]["image"]
    for name in ("search-sync-consumer", CLI_SERVICE):
        assert services[name]["image"] == image
        assert services[name]["pull_policy"] == "never"


def test_every_file_the_compose_file_mounts_exists() -> None:
    for name, service in compose_file()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), (name, source)


def test_each_producer_syncs_one_view_of_the_mounted_views_file_and_consumers_all() -> None:
    """SEARCHSYNC_CONFIG names the file the services mount (devstack's views file); each
    view of it has one producer service naming it, and the consumers serve every view."""
    services = compose_file()["services"]
    path = compose_file()["x-searchsync-env"][CONFIG_VARIABLE]
    for name in (*SEARCHSYNC_SERVICES, CLI_SERVICE):
        mounts = dict(str(v).rsplit(":", 1)[0].split(":", 1) for v in services[name]["volumes"])
        [(source, target)] = mounts.items()
        assert target == str(PurePosixPath(path).parent), name
        local = (COMPOSE / source).resolve() / PurePosixPath(path).name
    deployment = load_deployment({CONFIG_VARIABLE: str(local)})
    producers = {
        services[name]["environment"][VIEW_VARIABLE]: name
        for name in SEARCHSYNC_SERVICES
        if services[name]["command"] == ["searchsync-producer"]
    }
    assert sorted(producers) == sorted(deployment.names)
    assert VIEW_VARIABLE not in services["search-sync-consumer"]["environment"]
