"""The CRD is generated from the pydantic models, and the API server enforces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from productimport.models.crd import render
from productimport.models.resource import ProductImportSpec, ProductImportStatus

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "productimport.yaml"


def test_committed_crd_is_what_the_models_generate():
    assert CRD_FILE.read_text() == render(), (
        "crds/productimport.yaml is stale: run "
        "`.venv/bin/python -m productimport.models.crd > crds/productimport.yaml`"
    )


def _properties(schema: dict) -> set[str]:
    return set(schema.get("properties", {}))


def test_every_model_field_is_in_the_schema_and_status_is_not_open_ended():
    doc = yaml.safe_load(CRD_FILE.read_text())
    root = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert _properties(root["spec"]) == set(ProductImportSpec.model_fields)
    assert _properties(root["status"]) == set(ProductImportStatus.model_fields)
    assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(root["status"])


def manifest(name: str, namespace: str, **spec) -> str:
    body = {
        "apiVersion": "catalog.productimport.dev/v1alpha1",
        "kind": "ProductImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"catalog": "main", "source": {"object": {"bucket": "uploads", "key": "x.csv"}}}
        | spec,
    }
    return json.dumps(body)


@pytest.mark.cluster
def test_invalid_manifests_are_refused_with_a_clear_message(cluster):
    ns = cluster.namespace("crd")
    both = manifest(
        "both",
        ns,
        source={"object": {"bucket": "uploads", "key": "x.csv"}, "url": "https://e.test/p.csv"},
    )
    done = cluster.kubectl("apply", "-f", "-", input=both, check=False)
    assert done.returncode != 0
    assert "exactly one of source.object and source.url" in done.stderr

    neither = manifest("neither", ns, source={})
    done = cluster.kubectl("apply", "-f", "-", input=neither, check=False)
    assert "exactly one of source.object and source.url" in done.stderr

    bad = manifest("bad", ns, catalog="Main Catalog", mode="merge")
    done = cluster.kubectl("apply", "-f", "-", input=bad, check=False)
    assert done.returncode != 0
    assert "spec.catalog" in done.stderr and "spec.mode" in done.stderr
    assert '"merge"' in done.stderr and "upsert" in done.stderr

    two_chars = manifest("csv", ns, csv={"delimiter": ";;"})
    done = cluster.kubectl("apply", "-f", "-", input=two_chars, check=False)
    assert done.returncode != 0 and "spec.csv.delimiter" in done.stderr

    plain_http = manifest("plain", ns, source={"url": "http://e.test/p.csv"})
    done = cluster.kubectl("apply", "-f", "-", input=plain_http, check=False)
    assert "spec.source.url" in done.stderr


@pytest.mark.cluster
def test_spec_is_immutable_and_defaults_are_filled_in(cluster):
    ns = cluster.namespace("crd")
    # The operator would start importing; this namespace's import is never given a file,
    # and only the admission behaviour matters here.
    cluster.kubectl("apply", "-f", "-", input=manifest("once", ns, dryRun=True))
    got = json.loads(cluster.kubectl("get", "pi", "once", "-n", ns, "-o", "json").stdout)
    assert got["spec"]["mode"] == "upsert" and got["spec"]["preset"] == "native"
    done = cluster.kubectl(
        "patch", "pi", "once", "-n", ns, "--type=merge", "-p", '{"spec":{"catalog":"other"}}',
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "spec is immutable" in done.stderr
    assert "create a new ProductImport" in done.stderr


@pytest.mark.cluster
def test_printer_columns(cluster):
    ns = cluster.namespace("crd")
    cluster.kubectl("apply", "-f", "-", input=manifest("cols", ns, dryRun=True))
    header = cluster.kubectl("get", "productimports", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "CATALOG", "PHASE", "ROWS", "CREATED", "UPDATED", "REJECTED",
                      "QUEUE", "AGE"]  # fmt: skip
    wide = cluster.kubectl("get", "pi", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-1] == "MESSAGE"


def test_resource_reference_page_is_up_to_date():
    from productimport.models.reference import render as render_reference

    page = CRD_FILE.parents[1] / "docs" / "resource-reference.md"
    assert page.read_text() == render_reference(), (
        "docs/resource-reference.md is stale: run "
        "`.venv/bin/python -m productimport.models.reference > docs/resource-reference.md`"
    )
