"""deploy/kubernetes/ as data, for tests/unit/deploy/.

Pure reading: every YAML document of every manifest through PyYAML's safe loader,
and the vendored Kubernetes schema (deploy/kubernetes/schema/) as one validator a kind.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = [
    "KUBERNETES",
    "KUSTOMIZATION",
    "SCHEMA",
    "SECRET_TEMPLATE",
    "Manifest",
    "containers",
    "manifests",
    "one",
    "schema_errors",
]

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMA = KUBERNETES / "schema" / "kubernetes-strict.json"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
SECRET_TEMPLATE = KUBERNETES / "secret.template.yaml"

# (apiVersion, kind) → the schema's $defs entry (kubernetes-json-schema's file names)
KIND_SCHEMAS = {
    ("v1", "ConfigMap"): "configmap-v1",
    ("v1", "Secret"): "secret-v1",
    ("apps/v1", "Deployment"): "deployment-apps-v1",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscaler-autoscaling-v2",
}

Manifest = dict[str, Any]


def manifests() -> list[tuple[Path, Manifest]]:
    """Every Kubernetes object kustomize applies, with its file (kustomization.yaml is
    kustomize's own; the Secret template is applied by hand). Raises yaml.YAMLError."""
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path in (KUSTOMIZATION, SECRET_TEMPLATE):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), path
            found.append((path, document))
    return found


def one(kind: str, name: str) -> Manifest:
    (found,) = [m for _, m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def containers(deployment: Manifest) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return listed


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def schema_errors(manifest: Manifest) -> list[str]:
    """What the Kubernetes schema of the object's kind finds wrong ("path: message");
    a kind the vendored schema lacks is one error."""
    name = KIND_SCHEMAS.get((manifest.get("apiVersion", ""), manifest.get("kind", "")))
    if name is None:
        return [f"no schema for {manifest.get('apiVersion')}/{manifest.get('kind')}"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": _schema()["$defs"],
        "$ref": f"#/$defs/{name}",
    }
    validator = Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]
