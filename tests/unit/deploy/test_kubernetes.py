"""deploy/kubernetes/ against the Kubernetes API's own JSON schemas, and against what
searchsync reads and serves.

No cluster, no kubectl, no kubeconform here (kubeconform fetches its schemas from the
network at run time): the schemas are Kubernetes' OpenAPI definitions as
kubernetes-validate ships them, strict variant (an unknown field is an error), vendored
in deploy/kubernetes/schema/ (its README: version and checksum). The product's facts
come from the code: the settings of common/config.py, the metric of producer/metrics.py,
the paths common/endpoint.py serves, the console scripts of pyproject, compose's grace
periods.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import PurePosixPath
from typing import Any
from wsgiref.util import setup_testing_defaults

import msgspec
import pytest
import yaml
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from searchsync.common.config import SECRET_VARIABLES, Settings
from searchsync.common.endpoint import _app
from searchsync.common.health import Verdict
from searchsync.common.views import CONFIG_VARIABLE, VIEW_VARIABLE, Deployment, parse_views
from searchsync.producer.metrics import ProducerMetrics
from tests.unit.compose.deployment import compose_file
from tests.unit.deploy.manifests import (
    KUBERNETES,
    KUSTOMIZATION,
    ROOT,
    SCHEMA,
    SECRET_TEMPLATE,
    Manifest,
    containers,
    manifests,
    one,
    schema_errors,
)

SETTINGS = frozenset(field.encode_name for field in msgspec.structs.fields(Settings))
PRODUCERS = [
    m for _, m in manifests() if m["kind"] == "Deployment" and "producer" in m["metadata"]["name"]
]
CONSUMERS = one("Deployment", "searchsync-consumer")
DEPLOYMENTS = [*PRODUCERS, CONSUMERS]
SETTINGS_MAP: dict[str, str] = one("ConfigMap", "searchsync-settings")["data"]


def views_of(values: dict[str, str]) -> Deployment:
    """The views a pod with ``values`` syncs: the ConfigMap's views file, parsed as
    common.views reads it from SEARCHSYNC_CONFIG (no file on disk: its TOML text)."""
    text = one("ConfigMap", "searchsync-views")["data"]["views.toml"]
    return parse_views(tomllib.loads(text), values, values[CONFIG_VARIABLE])


def secret_template() -> Manifest:
    loaded = yaml.safe_load(SECRET_TEMPLATE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def environment(deployment: Manifest) -> dict[str, str]:
    """What the container's process gets: the ConfigMap, the Secret template, then env
    (a fieldRef stands for the pod's name)."""
    (container,) = containers(deployment)
    values: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            values.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            assert source["secretRef"]["name"] == secret_template()["metadata"]["name"]
            values.update(secret_template()["stringData"])
    for variable in container.get("env", []):
        values[variable["name"]] = variable.get("value", "pod-name")
    return values


def test_the_vendored_schema_is_kubernetes_own() -> None:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    assert "Kubernetes v1.33.0-local-strict" in schema["title"]
    assert "io.k8s.api.core.v1.Container" in schema["$defs"]
    readme = (SCHEMA.parent / "README.md").read_text()
    assert "kubernetes-validate" in readme and "1.37.0" in readme
    assert re.search(r"`[0-9a-f]{64}`", readme), "the wheel's SHA-256 is recorded"
    # extract.py wrote it: every $ref resolves inside the file
    text = SCHEMA.read_text()
    for ref in set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', text)):
        assert ref in schema["$defs"], ref


@pytest.mark.parametrize(
    "manifest",
    [m for _, m in manifests()] + [secret_template()],
    ids=lambda m: f"{m['kind']}/{m['metadata']['name']}",
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(manifest: Manifest) -> None:
    assert schema_errors(manifest) == []


def test_the_schema_check_rejects_what_the_api_server_would_reject() -> None:
    """Not vacuous: mistakes kubectl apply refuses are found."""
    deployment = copy.deepcopy(CONSUMERS)
    deployment["spec"]["replica"] = 2
    (container,) = containers(deployment)
    container["ports"][0]["containerPort"] = "9400"
    container["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    errors = schema_errors(deployment)
    assert any("'replica' was unexpected" in e for e in errors), errors
    assert any(
        e.startswith("spec/template/spec/containers/0/ports/0/containerPort") for e in errors
    )
    assert any("'paht' was unexpected" in e for e in errors), errors
    hpa = copy.deepcopy(one("HorizontalPodAutoscaler", "searchsync-consumer"))
    hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] = ["1000"]
    del hpa["spec"]["scaleTargetRef"]["name"]
    errors = schema_errors(hpa)
    assert any("averageValue" in e for e in errors), errors
    assert any("'name' is a required property" in e for e in errors), errors
    assert schema_errors({"apiVersion": "apps/v1beta1", "kind": "Deployment"}) != []


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert listed == on_disk - {SECRET_TEMPLATE.name}
    (image,) = kustomization["images"]
    assert {c["image"] for d in DEPLOYMENTS for c in containers(d)} == {image["name"]}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_the_selector_matches_the_pod_labels(deployment: Manifest) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    others = [d for d in DEPLOYMENTS if d is not deployment]
    for other in others:  # no Deployment adopts another's pods
        assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_every_variable_a_container_gets_is_a_setting_and_loads(deployment: Manifest) -> None:
    values = environment(deployment)
    assert sorted(set(values) - SETTINGS - {CONFIG_VARIABLE, VIEW_VARIABLE}) == []
    # no exit 2 at start (ViewsError or ConfigError otherwise), with the mounted file
    settings = views_of(values).view(values.get(VIEW_VARIABLE))
    assert settings.metrics_port == 9400
    assert settings.metrics_host == "0.0.0.0"  # the kubelet's probes reach the pod's IP


def test_secrets_are_only_in_the_secret_and_it_holds_no_real_one() -> None:
    assert set(SETTINGS_MAP) & SECRET_VARIABLES == set()
    secret = secret_template()
    assert set(secret["stringData"]) == SECRET_VARIABLES
    for name, value in secret["stringData"].items():
        assert "CHANGE_ME" in value, name
    assert secret["metadata"]["name"] == "searchsync-credentials"


def test_the_views_file_is_mounted_where_searchsync_config_says_in_every_pod() -> None:
    views = one("ConfigMap", "searchsync-views")
    path = PurePosixPath(SETTINGS_MAP[CONFIG_VARIABLE])
    assert set(views["data"]) == {path.name}
    for deployment in DEPLOYMENTS:
        pod = deployment["spec"]["template"]["spec"]
        (volume,) = pod["volumes"]
        assert volume["configMap"]["name"] == views["metadata"]["name"]
        (container,) = containers(deployment)
        (mount,) = container["volumeMounts"]
        assert (mount["name"], mount["mountPath"]) == (volume["name"], str(path.parent))


def test_the_views_file_loads_and_each_view_has_its_producer() -> None:
    deployment = views_of(environment(CONSUMERS))
    assert deployment.names == tuple(environment(p)[VIEW_VARIABLE] for p in PRODUCERS)


def test_each_view_has_one_producer_deployment_of_an_active_and_a_standby() -> None:
    assert PRODUCERS
    views = [environment(p)[VIEW_VARIABLE] for p in PRODUCERS]
    assert len(views) == len(set(views))
    for producer in PRODUCERS:
        assert producer["spec"]["replicas"] == 2
        (container,) = containers(producer)
        assert container["command"] == ["searchsync-producer"]
        assert (
            producer["metadata"]["labels"]["searchsync/view"]
            == environment(producer)[VIEW_VARIABLE]
        )
        # a rolling update starts the new standby before the active one stops
        assert producer["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = containers(CONSUMERS)
    assert container["command"] == ["searchsync-consumer"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"searchsync-producer", "searchsync-consumer"} <= set(scripts)


def test_the_autoscaler_reads_the_buffer_metric_the_producer_exports() -> None:
    hpa = one("HorizontalPodAutoscaler", "searchsync-consumer")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == CONSUMERS["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["external"]["metric"]["name"]
    selector: dict[str, str] = metric["external"]["metric"]["selector"]["matchLabels"]
    registry = CollectorRegistry()
    ProducerMetrics(registry, environment(PRODUCERS[0])[VIEW_VARIABLE])
    families = {family.name: family for family in registry.collect()}
    assert name in families, sorted(families)
    (sample,) = families[name].samples
    assert selector.items() <= sample.labels.items()  # the view the deployment syncs
    # no more consumers than partitions: one beyond holds no lease
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["maxReplicas"] == int(SETTINGS_MAP["STREAM_PARTITIONS"])
    assert metric["external"]["target"]["type"] == "AverageValue"


def _get(path: str, healthy: bool) -> str:
    """What common.endpoint answers on ``path`` (its WSGI app, no socket)."""
    app = _app(CollectorRegistry(), lambda: Verdict(healthy, "ok" if healthy else "stalled"))
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))  # type: ignore[arg-type]
    return statuses[0]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_probes_ask_what_the_process_serves_on_metrics_port(deployment: Manifest) -> None:
    (container,) = containers(deployment)
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", int(SETTINGS_MAP["METRICS_PORT"]))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == SETTINGS_MAP["METRICS_PORT"]
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness == {"path": "/healthz", "port": "metrics"}
    assert liveness == {"path": "/metrics", "port": "metrics"}
    # readiness follows health; liveness answers while the process serves, healthy or not
    assert _get(readiness["path"], healthy=True).startswith("200")
    assert _get(readiness["path"], healthy=False).startswith("503")
    assert _get(liveness["path"], healthy=False).startswith("200")


def test_grace_periods_are_composes() -> None:
    services = compose_file()["services"]

    def seconds(value: str) -> int:
        assert value.endswith("s")
        return int(value[:-1])

    for producer in PRODUCERS:
        grace = producer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == seconds(services["search-sync"]["stop_grace_period"])
    grace = CONSUMERS["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == seconds(services["search-sync-consumer"]["stop_grace_period"])


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, quantity
    return int(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_every_container_requests_resources_and_has_a_memory_limit(deployment: Manifest) -> None:
    (container,) = containers(deployment)
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    # no CPU limit on purpose (throttling stalls lease renewals); memory is bounded
    assert set(resources["limits"]) == {"memory"}
    assert _mebibytes(resources["limits"]["memory"]) >= 2 * _mebibytes(
        resources["requests"]["memory"]
    )
