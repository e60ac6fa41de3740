"""A catalog's lifecycle over REST, end to end on the local control plane: versions listed
with the imports that made them, a rollback to an earlier version (and its Event), an
export that imports back unchanged with preset=native, and a Parquet export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import httpx
import pytest
from kubernetes import client as k8s

from devenv.waiting import wait_until

pytestmark = pytest.mark.cluster

CATALOG = "shop"

# Version 1: fields of every kind, attributes (one with a comma in its key, one value with
# a leading space), tags, and text that CSV must quote (commas, quotes, a line break).
FIRST = (
    "sku,name,description,status,commodity_type,price,currency,tags,upc_ean,mpn,"
    'external_ref,main_image,parent_sku,slug,Color,"Size, EU",Material\n'
    'A-1,"Alpha, the ""first""","two\nlines",live,physical,19.99,EUR,"new, sale",'
    "4006381333931,MPN-1,ext-1,https://img.example/a.png,,alpha,red, 42,cotton\n"
    "B-2,Beta,plain,draft,digital,5,usd,,,,,,A-1,beta,blue,,\n"
    "C-3,Gamma ünïcode,,,,,,single,,,,,,,,,wool\n"
)
# Version 2: B-2 changes, D-4 is new.
SECOND = "sku,name,price,Color\nB-2,Beta v2,7.50,green\nD-4,Delta,1,\n"


@dataclass(frozen=True)
class Imported:
    namespace: str
    names: list[str]  # the ProductImports, in order
    uids: list[str]
    products: list[list[dict[str, Any]]]  # the products after each import


def base(api, namespace: str, catalog: str = CATALOG) -> str:
    return f"{api.url}/api/v1/namespaces/{namespace}/catalogs/{catalog}"


def upload(api, headers, namespace: str, catalog: str, content: bytes) -> dict[str, Any]:
    r = httpx.post(
        f"{base(api, namespace, catalog)}/imports",
        headers=headers,
        files={"file": ("products.csv", content, "text/csv")},
        data={"preset": "native"},
        timeout=120,
    )
    assert r.status_code == 202, r.text
    return r.json()


def status(api, headers, accepted: dict[str, Any]) -> dict[str, Any]:
    r = httpx.get(api.url + accepted["statusUrl"], headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def import_and_wait(api, headers, namespace: str, catalog: str, content: bytes) -> dict:
    accepted = upload(api, headers, namespace, catalog, content)
    done = wait_until(
        lambda: status(api, headers, accepted),
        lambda s: s["phase"] in ("Succeeded", "Failed", "Cancelled"),
        "the import did not finish",
    )
    assert done["phase"] == "Succeeded", done
    assert done["counts"]["rejected"] == 0, done
    return done


def products(api, headers, namespace: str, catalog: str = CATALOG) -> list[dict[str, Any]]:
    r = httpx.get(f"{base(api, namespace, catalog)}/products?limit=1000", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def content(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Products as their fields say, without what an import assigns (ids, timestamps)."""
    skip = {"id", "created_at", "updated_at", "import_id"}
    return [{k: v for k, v in p.items() if k not in skip} for p in items]


def versions(api, headers, namespace: str, catalog: str = CATALOG) -> list[dict[str, Any]]:
    r = httpx.get(f"{base(api, namespace, catalog)}/versions", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.fixture(scope="module")
def lifecycle_ns(cluster) -> str:
    return cluster.namespace("api-life")


@pytest.fixture(scope="module")
def imported(api, admin, lifecycle_ns) -> Imported:
    """Two imports into one catalog: versions 1 and 2."""
    names, uids, after = [], [], []
    for data in (FIRST, SECOND):
        done = import_and_wait(api, admin, lifecycle_ns, CATALOG, data.encode())
        names.append(done["name"])
        uids.append(done["uid"])
        after.append(products(api, admin, lifecycle_ns))
    return Imported(lifecycle_ns, names, uids, after)


def test_versions_list_each_import_by_uid_and_name(api, admin, imported):
    listed = versions(api, admin, imported.namespace)
    by_version = {v["version"]: v for v in listed}
    assert [v["version"] for v in listed] == sorted(by_version, reverse=True)
    first, second = by_version[1], by_version[2]
    assert (first["importUid"], first["importName"]) == (imported.uids[0], imported.names[0])
    assert (second["importUid"], second["importName"]) == (imported.uids[1], imported.names[1])
    assert first["products"] == 3 and second["products"] == 4
    assert first["counts"]["created"] == 3
    assert second["counts"]["created"] == 1 and second["counts"]["updated"] == 1
    assert first["rollbackOf"] is None and second["rollbackOf"] is None
    assert first["createdAt"] <= second["createdAt"]
    assert set(first) == {
        "version",
        "importUid",
        "importName",
        "counts",
        "products",
        "rollbackOf",
        "createdAt",
    }


def test_versions_of_a_catalog_never_written_is_an_empty_list(api, admin, lifecycle_ns):
    assert versions(api, admin, lifecycle_ns, "never-written") == []


def test_a_deleted_import_is_listed_without_a_name(api, admin, kube, lifecycle_ns):
    done = import_and_wait(api, admin, lifecycle_ns, "gone", b"sku,name\nG-1,Gone\n")
    kube.delete_namespaced_custom_object(
        "catalog.productimport.dev", "v1alpha1", lifecycle_ns, "productimports", done["name"]
    )
    wait_until(
        lambda: {"listed": versions(api, admin, lifecycle_ns, "gone")},
        lambda b: b["listed"] and b["listed"][0]["importName"] is None,
        "the deleted import is still named",
    )
    (only,) = versions(api, admin, lifecycle_ns, "gone")
    assert only["importUid"] == done["uid"]


def test_rollback_makes_a_new_version_with_the_old_content_and_an_event(api, admin, kube, imported):
    ns = imported.namespace
    head = versions(api, admin, ns)[0]["version"]
    r = httpx.post(f"{base(api, ns)}/rollback", headers=admin, json={"version": 1})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["version"] == head + 1 == 3
    assert made["rollbackOf"] == 1 and made["products"] == 3
    assert made["importUid"] is None and made["importName"] is None
    assert versions(api, admin, ns)[0] == made  # as /versions lists it
    # Version 1's products, exactly (the same files: ids and timestamps too).
    assert products(api, admin, ns) == imported.products[0]

    core = k8s.CoreV1Api(kube.api_client)
    events = [e for e in core.list_namespaced_event(ns).items if e.reason == "CatalogRolledBack"]
    assert len(events) == 1, events
    (event,) = events
    assert event.involved_object.kind == "Namespace" and event.involved_object.name == ns
    assert "version 1" in event.message and "version 3" in event.message
    assert "admin" in event.message  # the static token's name: who did it
    assert CATALOG in event.message

    # Rolling back to the current version changes nothing: refused, not a no-op version.
    r = httpx.post(f"{base(api, ns)}/rollback", headers=admin, json={"version": 3})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "already_current"


def test_rollback_to_a_version_that_does_not_exist_is_404(api, admin, imported):
    ns = imported.namespace
    r = httpx.post(f"{base(api, ns)}/rollback", headers=admin, json={"version": 99})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"
    r = httpx.post(f"{base(api, ns, 'never-written')}/rollback", headers=admin, json={"version": 1})
    assert r.status_code == 404, r.text
    for bad in ({"version": 0}, {"version": "one"}, {}, {"version": 1, "extra": True}):
        r = httpx.post(f"{base(api, ns)}/rollback", headers=admin, json=bad)
        assert r.status_code == 422, (bad, r.text)


def test_export_csv_imports_back_unchanged_with_preset_native(api, admin, imported):
    ns = imported.namespace
    for version, expected in ((2, imported.products[1]), (1, imported.products[0])):
        r = httpx.get(f"{base(api, ns)}/export?format=csv&version={version}", headers=admin)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["x-catalog-version"] == str(version)
        assert f'filename="{CATALOG}-v{version}.csv"' in r.headers["content-disposition"]
        assert r.content.startswith(b'"sku","name","slug","description","status"')
        copy = f"copy-v{version}"
        import_and_wait(api, admin, ns, copy, r.content)
        assert content(products(api, admin, ns, copy)) == content(expected)


def test_export_parquet_is_readable_by_duckdb(api, admin, imported, tmp_path):
    ns = imported.namespace
    current = products(api, admin, ns)
    r = httpx.get(f"{base(api, ns)}/export?format=parquet", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    path = tmp_path / "products.parquet"
    path.write_bytes(r.content)
    relation = duckdb.read_parquet(str(path))
    assert "content_digest" not in relation.columns and "bucket" not in relation.columns
    assert {"id", "sku", "name", "attributes", "tags", "import_id"} <= set(relation.columns)
    rows = relation.order("sku").fetchall()
    assert len(rows) == len(current)
    skus = relation.columns.index("sku")
    assert [row[skus] for row in rows] == [p["sku"] for p in current]


def test_export_of_an_unknown_version_is_404_and_of_an_empty_catalog_a_header(api, admin, imported):
    ns = imported.namespace
    for fmt in ("csv", "parquet"):
        r = httpx.get(f"{base(api, ns)}/export?format={fmt}&version=99", headers=admin)
        assert r.status_code == 404, r.text
        empty = base(api, ns, "never-written")
        r = httpx.get(f"{empty}/export?format={fmt}&version=1", headers=admin)
        assert r.status_code == 404, r.text
    r = httpx.get(f"{base(api, ns, 'never-written')}/export", headers=admin)
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == [r.text.strip()]  # the header only
    r = httpx.get(f"{base(api, ns)}/export?format=xml", headers=admin)
    assert r.status_code == 422, r.text


def test_rollback_is_refused_while_an_import_of_the_catalog_runs(api, admin, imported):
    ns = imported.namespace
    rows = 1_000_000  # about 30 MB: the loader needs several seconds for it
    body = "sku,name,price\n" + "".join(f"r-{i},Product {i},{i % 97}.5\n" for i in range(rows))
    accepted = upload(api, admin, ns, "busy", body.encode())
    wait_until(
        lambda: status(api, admin, accepted),
        lambda s: s["phase"] == "Running",
        "the import never ran",
    )
    try:
        r = httpx.post(f"{base(api, ns, 'busy')}/rollback", headers=admin, json={"version": 1})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "import_running"
        assert accepted["name"] in error["message"]
        # Another catalog's running import does not hold this one back.
        r = httpx.post(f"{base(api, ns)}/rollback", headers=admin, json={"version": 2})
        assert r.status_code == 200, r.text
        assert r.json()["rollbackOf"] == 2
        assert products(api, admin, ns) == imported.products[1]
    finally:
        httpx.post(api.url + accepted["statusUrl"] + "/cancel", headers=admin)


def test_a_token_without_rights_in_the_namespace_gets_403(api, tokens, imported):
    ns = imported.namespace
    theirs = tokens["a"]  # bound to another namespace
    url = base(api, ns)
    assert httpx.get(f"{url}/versions", headers=theirs).status_code == 403
    assert httpx.post(f"{url}/rollback", headers=theirs, json={"version": 1}).status_code == 403
    assert httpx.get(f"{url}/export", headers=theirs).status_code == 403
    assert httpx.get(f"{url}/export?format=parquet", headers=theirs).status_code == 403
    assert httpx.get(f"{url}/versions").status_code == 401
