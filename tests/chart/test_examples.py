"""Every manifest in examples/ is what it claims to be: the ProductImports are accepted by
the real API server (the CRD's schema and CEL rules, strict field validation), and the
Flux and Argo CD objects, whose CRDs the dev cluster does not have, have the right kind
and point at the example imports that exist here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import REPO

EXAMPLES = REPO / "examples"
GROUP_VERSION = "catalog.productimport.dev/v1alpha1"
KNOWN = {
    (GROUP_VERSION, "ProductImport"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("argoproj.io/v1alpha1", "Application"),
}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path, doc))
    return found


def _of(kind: str, api_version: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in _documents() if (d["apiVersion"], d["kind"]) == (api_version, kind)]


def test_every_example_is_a_known_kind() -> None:
    docs = _documents()
    assert docs
    for path, doc in docs:
        assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN, path
        if doc["kind"] != "Kustomization" or "kustomize.config" not in doc["apiVersion"]:
            assert doc["metadata"]["name"], path
    kinds = {d["kind"] for _, d in docs}
    assert {"ProductImport", "Kustomization", "GitRepository", "Application"} <= kinds


def test_there_is_a_url_import_and_an_object_import() -> None:
    sources = [d["spec"]["source"] for _, d in _of("ProductImport", GROUP_VERSION)]
    assert any(s.get("url", "").startswith("https://") for s in sources)
    assert any("object" in s for s in sources)


def test_kustomize_directory_lists_every_import_file() -> None:
    for path, doc in _of("Kustomization", "kustomize.config.k8s.io/v1beta1"):
        listed = {path.parent / r for r in doc["resources"]}
        present = {p for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert listed == present, path


def test_kustomize_builds_the_directory(helm: Path) -> None:
    # kubectl's built-in kustomize (kubectl sits beside helm in the dev binaries).
    kubectl = helm.parent / "kubectl"
    for path, _ in _of("Kustomization", "kustomize.config.k8s.io/v1beta1"):
        done = subprocess.run(
            [str(kubectl), "kustomize", str(path.parent)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        built = {d["metadata"]["name"] for d in yaml.safe_load_all(done.stdout) if d}
        expected = {d["metadata"]["name"] for p, d in _documents() if p.parent == path.parent
                    and d["kind"] == "ProductImport"}  # fmt: skip
        assert built == expected


def test_flux_waits_for_the_imports_it_applies() -> None:
    ((_, ks),) = _of("Kustomization", "kustomize.toolkit.fluxcd.io/v1")
    spec = ks["spec"]
    assert spec["wait"] is True and spec["prune"] is True
    assert (EXAMPLES.parent / spec["path"]).is_dir(), spec["path"]
    (check,) = spec["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == (GROUP_VERSION, "ProductImport")
    assert {"current", "failed"} <= set(check)
    ((_, repo),) = _of("GitRepository", "source.toolkit.fluxcd.io/v1")
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}


def test_argocd_application_points_at_the_imports() -> None:
    ((_, app),) = _of("Application", "argoproj.io/v1alpha1")
    spec = app["spec"]
    assert (EXAMPLES.parent / spec["source"]["path"]).is_dir(), spec["source"]["path"]
    assert spec["syncPolicy"]["automated"]["prune"] is True
    assert spec["destination"]["namespace"]


@pytest.mark.cluster
def test_the_api_server_accepts_every_example_import(cluster: Any) -> None:
    imports = _of("ProductImport", GROUP_VERSION)
    assert imports
    namespace = cluster.namespace("examples")
    for path, doc in imports:
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        done = cluster.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-",
            input=json.dumps(doc), check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{path}: {done.stderr}"
        assert "created (server dry run)" in done.stdout, done.stdout
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.cluster
def test_an_edited_spec_is_refused(cluster: Any) -> None:
    # What examples/README.md promises: re-running an import needs a new name.
    (_, doc), *_ = [(p, d) for p, d in _of("ProductImport", GROUP_VERSION)
                    if "object" in d["spec"]["source"]]  # fmt: skip
    namespace = cluster.namespace("examples")
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    # Created for real, so there is something to edit: a dry run whose object does not
    # exist in this MinIO (it fails at once, commits nothing), in a namespace deleted
    # right after.
    doc["spec"] = {**doc["spec"], "dryRun": True}
    cluster.kubectl("create", "-f", "-", input=json.dumps(doc))
    try:
        edited = json.loads(json.dumps(doc))
        edited["spec"]["catalog"] = "other"
        done = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=json.dumps(edited), check=False
        )
        assert done.returncode != 0
        assert "spec is immutable" in done.stderr, done.stderr
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
