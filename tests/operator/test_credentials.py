"""Which sources an import may name, and what its credentials allow (pure; the attacks
against the running system are in test_tenant_isolation.py)."""

from __future__ import annotations

import pytest

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import open_store
from productimport.models.resource import ProductImportSpec
from productimport.operator.credentials import SourceNotAllowed, check_source, session_policy


def _spec(source: dict) -> ProductImportSpec:
    return ProductImportSpec.model_validate({"catalog": "main", "source": source})


def test_an_object_source_must_lie_in_the_uploads_of_its_own_namespace():
    check_source(
        "shop-a", _spec({"object": {"bucket": "uploads", "key": "shop-a/x.csv"}}), "uploads"
    )
    check_source("shop-a", _spec({"url": "https://example.com/feed.csv"}), "uploads")
    for bucket, key in [
        ("uploads", "shop-b/x.csv"),  # another tenant
        ("uploads", "shop-ab/x.csv"),  # a namespace whose name starts alike
        ("catalog", "shop-a/main/CURRENT"),  # a catalog object, even its own
        ("uploads", "shop-a/../shop-b/x.csv"),
        ("uploads", "shop-a/*"),
        ("uploads", "shop-a/${aws:username}"),
    ]:
        with pytest.raises(SourceNotAllowed):
            check_source("shop-a", _spec({"object": {"bucket": bucket, "key": key}}), "uploads")


def test_the_session_policy_names_its_source_and_its_catalog_prefix_only():
    # The catalog as the loader opens it (--store s3://catalog/tenants), so the policy
    # covers exactly the keys the loader writes.
    catalog = Catalog(open_store("s3://catalog/tenants"), "shop-a", "main")
    table = catalog.table_ref
    table_bucket = table.removeprefix("s3://").split("/")[0]
    # The table's bucket is the catalog's own: another catalog's, or another tenant's
    # catalog of the same name, is another bucket.
    others = [("shop-a", "other"), ("shop-b", "main")]
    assert all(
        Catalog(open_store("s3://catalog/tenants"), ns, name).table_ref != table
        for ns, name in others
    )
    assert table_bucket.startswith("catalog-") and len(table_bucket) <= 63
    policy = session_policy(catalog.ref("*"), "s3://uploads/shop-a/2026/x.csv", table)
    granted = {(a, r) for s in policy["Statement"] for a in s["Action"] for r in s["Resource"]}
    write = {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}
    assert granted == {
        *((a, "arn:aws:s3:::catalog/tenants/shop-a/main/*") for a in write),
        *((a, f"arn:aws:s3:::{table_bucket}/*") for a in write),
        ("s3:ListBucket", f"arn:aws:s3:::{table_bucket}"),  # its own bucket, nothing else
        ("s3:GetObject", "arn:aws:s3:::uploads/shop-a/2026/x.csv"),
    }
    url = session_policy(catalog.ref("*"), None, table)  # a URL source: nothing to read
    assert all("uploads" not in r for s in url["Statement"] for r in s["Resource"])
    with pytest.raises(ValueError):
        session_policy("/var/store/shop-a/main/*", None, table)  # a directory has no ARN
