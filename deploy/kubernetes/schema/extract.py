"""Write kubernetes-strict.json: the Kubernetes JSON schemas of the kinds in
deploy/kubernetes/, with only the definitions they reach.

    python deploy/kubernetes/schema/extract.py kubernetes_validate-1.37.0-py3-none-any.whl

The source is the wheel of kubernetes-validate (PyPI), which ships the schemas
generated from Kubernetes' OpenAPI document, one file a kind plus _definitions.json
(1.4 MB) that they $ref; "-strict" adds additionalProperties: false, so a misspelt
field is an error. The output is one JSON Schema (draft 2020-12) whose $defs hold
each kind (under its file name, e.g. deployment-apps-v1) and the definitions the
kinds reach, with every $ref rewritten to "#/$defs/…". README.md here records the
version and the wheel's SHA-256.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

KUBERNETES = "v1.33.0-local-strict"
KINDS = (
    "configmap-v1",
    "secret-v1",
    "deployment-apps-v1",
    "horizontalpodautoscaler-autoscaling-v2",
)
# a kind's file $refs the definitions file; the definitions $ref each other locally
DEFINITIONS_REFS = ("/api/_definitions.json#/$defs/", "#/$defs/")
OUT = Path(__file__).with_name("kubernetes-strict.json")


def refs(node: Any) -> list[str]:
    """Every definition name a node $refs, depth first."""
    if isinstance(node, dict):
        found = []
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.extend(ref.removeprefix(p) for p in DEFINITIONS_REFS if ref.startswith(p))
        for value in node.values():
            found.extend(refs(value))
        return found
    if isinstance(node, list):
        return [name for item in node for name in refs(item)]
    return []


def rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                "#/$defs/" + value.removeprefix(DEFINITIONS_REFS[0]).removeprefix("#/$defs/")
                if key == "$ref" and isinstance(value, str)
                else rewrite(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [rewrite(item) for item in node]
    return node


def main(wheel: str) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/{KUBERNETES}/"
    with zipfile.ZipFile(wheel) as archive:
        definitions = json.loads(archive.read(base + "_definitions.json"))["$defs"]
        kinds = {kind: json.loads(archive.read(f"{base}{kind}.json")) for kind in KINDS}
    for schema in (*definitions.values(), *kinds.values()):
        # an embedded $id would make "#/$defs/…" resolve inside that one schema
        schema.pop("$id", None)
        schema.pop("$schema", None)
    wanted: dict[str, Any] = {}
    pending = [name for schema in kinds.values() for name in refs(schema)]
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted[name] = definitions[name]
            pending.extend(refs(definitions[name]))
    defs = {**dict(sorted(wanted.items())), **kinds}
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Kubernetes {KUBERNETES} (kubernetes-validate), kinds of deploy/kubernetes",
        "kinds": list(KINDS),
        "$defs": rewrite(defs),
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"{OUT}: {len(KINDS)} kinds, {len(wanted)} definitions")


if __name__ == "__main__":
    main(sys.argv[1])
