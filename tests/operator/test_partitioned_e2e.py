"""A partitioned import on the real node: prepare Job, Indexed merge Job, commit Job.

Real kube-apiserver, Job controller and kubelet; the loaders are the product image. The
operator runs with 500 products per bucket so that a small file has buckets for several
merge Pods (docs/scaling.md).
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from imports_support import apply, events_of, finished, jobs_of, products_csv, upload

from devenv import services
from devenv.services import CATALOG_BUCKET
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import open_store
from productimport.models.resource import ANNOTATION_MERGE_PODS

pytestmark = pytest.mark.cluster


def test_a_large_upload_merges_in_an_indexed_job_and_commits_once(cluster, minio):
    ns = cluster.namespace("part")
    small, large = products_csv(1500), products_csv(2000)
    # The operator reads each object source's size from MinIO: the small file stays
    # below its threshold, the large one is at it and is merged by 3 Pods.
    settings = {
        "PRODUCTIMPORT_OPERATOR_ROWS_PER_BUCKET": "500",
        "PRODUCTIMPORT_OPERATOR_PARALLEL_THRESHOLD_BYTES": str(len(large)),
        "PRODUCTIMPORT_OPERATOR_PARALLELISM": "3",
    }
    with services.operator_with(cluster.devenv, **settings):
        apply(cluster, "base", ns, upload(minio, ns, small))
        base = finished(cluster, "base", ns)
        assert base["status"]["phase"] == "Succeeded", base["status"]
        assert base["status"]["counts"]["created"] == 1500
        assert ANNOTATION_MERGE_PODS not in base["metadata"].get("annotations", {})  # one Pod
        # 1,500 unchanged, 500 new, in 4 buckets merged by 3 Pods.
        apply(cluster, "big", ns, upload(minio, ns, large))
        obj = finished(cluster, "big", ns)
    assert obj["metadata"]["annotations"][ANNOTATION_MERGE_PODS] == "3"
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    counts = status["counts"]
    assert (counts["rows"], counts["created"], counts["unchanged"]) == (2000, 500, 1500)
    assert status["catalogVersion"] == 2  # one commit for every bucket

    uid = obj["metadata"]["uid"]
    mine = [j for j in jobs_of(cluster, ns) if j["metadata"]["ownerReferences"][0]["uid"] == uid]
    by_step = {
        step: j for j in mine for step in ("prepare", "merge", "import")
        if f"-{step}-" in j["metadata"]["name"]
    }  # fmt: skip
    assert sorted(by_step) == ["import", "merge", "prepare"], [j["metadata"]["name"] for j in mine]
    merge = by_step["merge"]
    assert merge["spec"]["completionMode"] == "Indexed"
    assert (merge["spec"]["completions"], merge["status"]["succeeded"]) == (3, 3)
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", ns, "-l", f"job-name={merge['metadata']['name']}", "-o", "json"
        ).stdout
    )["items"]
    indices = sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods
    )
    assert indices == ["0", "1", "2"]
    assert events_of(cluster, "big", ns).count("StepStarted") == 2

    # The catalog holds every product, in the buckets the plan named; what the steps
    # handed on is deleted, the import's report kept.
    catalog = f"{ns}/main/imports/{uid}/"
    left = [o.object_name for o in minio.list_objects(CATALOG_BUCKET, prefix=catalog)]
    assert any(name.endswith("result.json") for name in left)
    assert not [name for name in left if name.rsplit("/", 1)[1].startswith("stage-")], left
    table = Catalog(open_store(f"s3://{CATALOG_BUCKET}"), ns, "main")
    uri, options = table.table.table_location()
    products = pl.read_delta(uri, storage_options=options)
    assert products.height == 2000 and products["sku"].n_unique() == 2000
    head = table.head()
    assert head.buckets == 4 and {f.bucket for f in head.files} == {0, 1, 2, 3}
