"""The import Job built for a ProductImport (pure: no cluster needed)."""

from __future__ import annotations

import copy

from productimport.operator.jobs import build_job, job_name
from productimport.operator.settings import OperatorSettings

OBJ = {
    "apiVersion": "catalog.productimport.dev/v1alpha1",
    "kind": "ProductImport",
    "metadata": {
        "name": "spring-catalog-refresh-with-a-rather-long-name-indeed-2026",
        "namespace": "shop-a",
        "uid": "5f0c2d6e-8a31-4c7e-9f0a-1d2b3c4d5e6f",
        "generation": 1,
    },
    "spec": {
        "catalog": "main",
        "source": {"object": {"bucket": "uploads", "key": "shop-a/main/x.upload"}},
        "preset": "shopify",
        "mode": "replace",
        "dryRun": True,
        "mapping": {"Variant SKU": "sku"},
        "errorPolicy": {"maxErrors": 10, "maxErrorRatio": 0.5},
        "csv": {"delimiter": ";", "encoding": "latin-1", "header": True, "quote": '"'},
        "job": {"resources": {"requests": {"cpu": 1}, "limits": {"memory": "4Gi"}}, "threads": 2},
    },
}


def test_name_is_deterministic_short_and_unique_per_resource():
    name = job_name(OBJ)
    assert name == job_name(copy.deepcopy(OBJ))
    assert len(name) <= 63 and name[-1].isalnum()
    other = copy.deepcopy(OBJ)
    other["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    assert job_name(other) != name


def test_job_is_owned_retried_on_infrastructure_only_and_cleaned_up():
    job = build_job(OBJ, OperatorSettings())
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == OBJ["metadata"]["uid"] and owner["controller"] is True
    spec = job["spec"]
    assert spec["ttlSecondsAfterFinished"] > 0
    # A deadline even when the ProductImport names none (a stuck Job holds its catalog).
    assert spec["activeDeadlineSeconds"] == OperatorSettings().default_active_deadline_seconds
    own = copy.deepcopy(OBJ)
    own["spec"]["job"]["activeDeadlineSeconds"] = 60
    assert build_job(own, OperatorSettings())["spec"]["activeDeadlineSeconds"] == 60
    disrupted, fail_fast = spec["podFailurePolicy"]["rules"]
    # A drained node's Pod is SIGKILLed too: that rule must come before the exit codes.
    assert disrupted["action"] == "Ignore"
    assert fail_fast["action"] == "FailJob"
    # Bad data, missing source, DuckDB out of memory, the kernel's OOM kill (137).
    assert set(fail_fast["onExitCodes"]["values"]) == {65, 66, 71, 137}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["automountServiceAccountToken"] is False  # the loader gets no k8s access
    assert job["metadata"]["labels"]["catalog.productimport.dev/catalog"] == "main"


def test_loader_arguments_carry_the_spec():
    container = build_job(OBJ, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    joined = " ".join(args)
    assert args[:2] == ["import", "s3://uploads/shop-a/main/x.upload"]
    for expected in (
        "--catalog main",
        "--namespace shop-a",
        f"--import-id {OBJ['metadata']['uid']}",
        "--preset shopify",
        "--mode replace",
        "--dry-run",
        "--mapping Variant SKU=sku",
        "--max-errors 10",
        "--max-error-ratio 0.5",
        "--delimiter ;",
        "--encoding latin-1",
        "--threads 2",
        "--json",
    ):
        assert expected in joined, expected
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["resources"]["limits"]["memory"] == "4Gi"
    # Its own credentials, in the Secret named as its Job (one per import).
    assert container["envFrom"] == [{"secretRef": {"name": job_name(OBJ)}}]


def test_url_source_is_passed_through():
    obj = copy.deepcopy(OBJ)
    obj["spec"]["source"] = {"url": "https://feeds.example.com/p.csv"}
    args = build_job(obj, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[1] == "https://feeds.example.com/p.csv"


def test_the_loaders_disk_is_bounded_and_an_import_may_ask_for_more(monkeypatch):
    pod = build_job(OBJ, OperatorSettings())["spec"]["template"]["spec"]
    loader = pod["containers"][0]
    assert loader["resources"]["limits"]["ephemeral-storage"] == "20Gi"
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}]

    bigger = copy.deepcopy(OBJ)
    bigger["spec"]["job"]["resources"]["limits"]["ephemeral-storage"] = "64Gi"
    pod = build_job(bigger, OperatorSettings())["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "64Gi"
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "64Gi"


def test_the_loader_gets_the_administrators_egress_policy(monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_EGRESS_ALLOW", '[{"cidr": "10.20.0.5/32", "ports": [443]}]')
    env = build_job(OBJ, OperatorSettings())["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e["value"] for e in env}
    assert values["PRODUCTIMPORT_EGRESS_ALLOW"] == '[{"cidr": "10.20.0.5/32", "ports": [443]}]'
    assert values["PRODUCTIMPORT_EGRESS_ALLOW_HTTP"] == "false"
