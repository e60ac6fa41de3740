"""Generate the ProductImport CustomResourceDefinition from the pydantic models.

`python -m productimport.models.crd` prints it; crds/productimport.yaml is its output,
and tests/operator/test_crd.py fails when the two differ. Pydantic's JSON Schema is
turned into a Kubernetes *structural* schema: references inlined, `X | None` reduced to
X (an unset field is absent, never null), `int | str` to x-kubernetes-int-or-string,
titles dropped.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from productimport.models.resource import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ProductImportSpec,
    ProductImportStatus,
)

PRINTER_COLUMNS = [
    {"name": "Catalog", "type": "string", "jsonPath": ".spec.catalog"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Rows", "type": "integer", "jsonPath": ".status.counts.rows"},
    {"name": "Created", "type": "integer", "jsonPath": ".status.counts.created"},
    {"name": "Updated", "type": "integer", "jsonPath": ".status.counts.updated"},
    {"name": "Rejected", "type": "integer", "jsonPath": ".status.counts.rejected"},
    {"name": "Queue", "type": "integer", "jsonPath": ".status.queuePosition"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON Schema node -> one Kubernetes OpenAPI v3 (structural) node."""
    if "$ref" in schema:
        target = structural(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        extra = {k: v for k, v in schema.items() if k not in ("$ref", "title")}
        return {**target, **structural(extra, defs)} if extra else target
    variants = schema.get("anyOf")
    if variants:
        rest = [v for v in variants if v.get("type") != "null"]
        outer = {k: v for k, v in schema.items() if k not in ("anyOf", "title")}
        if outer.get("default", 0) is None:
            outer.pop("default")
        if sorted(v.get("type", "") for v in rest) == ["integer", "string"]:
            return {**outer, "x-kubernetes-int-or-string": True}
        if len(rest) != 1:
            raise ValueError(f"no structural form for anyOf {variants}")
        return {**structural(rest[0], defs), **structural(outer, defs)}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "$defs"):
            continue
        if key == "additionalProperties" and value is False:
            continue  # extra="forbid": the API server prunes unknown fields instead
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "required":
            out[key] = list(value)
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _schema_of(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    return structural(raw, raw.get("$defs", {}))


def crd() -> dict[str, Any]:
    spec = _schema_of(ProductImportSpec)
    status = _schema_of(ProductImportStatus)
    # kstatus (Flux) calls a resource with no status at all "Current": a Kustomization with
    # wait: true would pass before the operator had even seen the import. A defaulted
    # observedGeneration of 0 makes a new resource read "InProgress" until the operator
    # writes its first status (docs/gitops.md).
    status["default"] = {"observedGeneration": 0}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["productimport"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A bulk import of a product file into a catalog.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# Generated by `python -m productimport.models.crd` from productimport/models/"
        "resource.py.\n# Do not edit by hand: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
