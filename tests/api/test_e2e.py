"""End to end on the local control plane, through real HTTP: upload a real file on each
of the three surfaces, let the operator run the import Job, poll until done, then check
the counts, the error report and the catalog."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest
from api_testdata import DATA

pytestmark = pytest.mark.cluster

# A bound on waiting for the operator, not a performance assertion: a stuck import
# must fail the test rather than hang the suite.
WAIT_SECONDS = 600


def poll(fetch, done) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        body = fetch()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"import did not finish: {body}"
        time.sleep(1)


def test_native_route_end_to_end(api, e2e_tenant, admin):
    source = DATA / "magento2-sample-data" / "products.csv"
    base = f"{api.url}/api/v1/namespaces/{e2e_tenant}/catalogs/magento"
    r = httpx.post(
        f"{base}/imports",
        headers=admin,
        files={"file": ("products.csv", source.read_bytes(), "text/csv")},
        data={"preset": "native"},
        timeout=120,
    )
    assert r.status_code == 202, r.text
    status_url = api.url + r.json()["statusUrl"]
    status = poll(
        lambda: httpx.get(status_url, headers=admin).json(),
        lambda b: b["phase"] in ("Succeeded", "Failed"),
    )
    assert status["phase"] == "Succeeded", status
    counts = status["counts"]
    assert counts["created"] == 1994
    assert counts["rejected"] == 0
    assert status["catalogVersion"] >= 1
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
    report = httpx.get(api.url + r.json()["errorsUrl"], headers={**admin, "Accept": "text/csv"})
    assert report.status_code == 200
    assert list(csv.reader(io.StringIO(report.text)))[1:] == []
    page = httpx.get(f"{base}/products", params={"limit": 10}, headers=admin).json()
    assert page["total"] == 1994
    assert page["catalogVersion"] == status["catalogVersion"]
    sku = page["items"][0]["sku"]
    one = httpx.get(f"{base}/products/{sku}", headers=admin)
    assert one.status_code == 200 and one.json()["sku"] == sku
    listed = httpx.get(f"{base}/imports", headers=admin).json()
    assert listed["items"][0]["name"] == r.json()["name"]


def test_native_route_reports_rejected_rows(api, e2e_tenant, admin, minio):
    # A real file plus rows that break the rules: the report names each one.
    text = (DATA / "akeneo-pim-docs" / "product.csv").read_text()
    first = text.splitlines()[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    columns = next(csv.reader([first], delimiter=delimiter))
    bad = delimiter.join("" for _ in columns)  # every field empty: no sku, no name
    body = text.rstrip("\n") + "\n" + bad + "\n"
    base = f"{api.url}/api/v1/namespaces/{e2e_tenant}/catalogs/akeneo"
    r = httpx.post(
        f"{base}/imports",
        headers=admin,
        files={"file": ("product.csv", body.encode(), "text/csv")},
        data={"preset": "native"},
    )
    assert r.status_code == 202, r.text
    status = poll(
        lambda: httpx.get(api.url + r.json()["statusUrl"], headers=admin).json(),
        lambda b: b["phase"] in ("Succeeded", "Failed"),
    )
    assert status["counts"]["rejected"] >= 1, status
    as_json = httpx.get(
        api.url + r.json()["errorsUrl"], headers={**admin, "Accept": "application/json"}
    ).json()
    assert as_json and {"line", "column", "code", "message"} <= set(as_json[0])
    last_line = len(body.splitlines())
    assert last_line in {e["line"] for e in as_json}
    as_csv = httpx.get(api.url + r.json()["errorsUrl"], headers=admin)
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == len(as_json)

    # Retention deletes the report a while after the import ended: the route says it
    # expired (410), never an empty report that would read as "no rejected rows".
    for kind in ("csv", "json"):  # the loader's layout (docs/loader-contract.md)
        minio.remove_object("catalog", f"{e2e_tenant}/akeneo/imports/{status['uid']}/errors.{kind}")
    gone = httpx.get(api.url + r.json()["errorsUrl"], headers=admin)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "report_expired", gone.text


def test_saas_route_end_to_end(api, e2e_workspace, admin):
    ws, _namespace = e2e_workspace
    source = DATA / "akeneo-pim-docs" / "product.csv"
    r = httpx.post(
        f"{api.url}/api/workspace/{ws}/catalog/products/import",
        params={"catalog_id": "akeneo"},
        headers=admin,
        files={"file": ("product.csv", source.read_bytes(), "text/csv")},
        data={"format": "csv"},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["backgroundJobId"]
    seen: set[str] = set()

    def fetch() -> dict:
        body = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{job_id}", headers=admin).json()
        seen.add(body["status"])
        return body

    job = poll(fetch, lambda b: b["status"] in ("completed", "failed"))
    assert job["status"] == "completed", job
    assert job["result"]["created"] == 15
    assert job["result"]["rejected"] == 0
    assert seen <= {"queued", "active", "completed"}


def test_pcm_route_end_to_end(api, e2e_tenant, tokens_e2e):
    source = DATA / "elasticpath-pcm" / "pim_product_import_example.csv"
    headers = tokens_e2e
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=headers,
        files={"file": (source.name, source.read_bytes(), "text/csv")},
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["data"]["id"]
    job = poll(
        lambda: httpx.get(f"{api.url}/pcm/jobs/{job_id}", headers=headers).json()["data"],
        lambda d: d["attributes"]["status"] in ("success", "failed"),
    )
    assert job["attributes"]["status"] == "success", job
    assert job["attributes"]["started_at"] and job["attributes"]["completed_at"]
    errors = httpx.get(f"{api.url}/pcm/jobs/{job_id}/errors", headers=headers).json()
    assert errors == {"data": []}
    # The same file again, now with a duplicated SKU: Elastic Path's "must be unique".
    lines = source.read_text().splitlines()
    dup = "\n".join([*lines, lines[1].replace(lines[1].split(",")[0], "dup-ref", 1)]) + "\n"
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=headers,
        files={"file": ("dup.csv", dup.encode(), "text/csv")},
    )
    assert r.status_code == 201
    job_id = r.json()["data"]["id"]
    poll(
        lambda: httpx.get(f"{api.url}/pcm/jobs/{job_id}", headers=headers).json()["data"],
        lambda d: d["attributes"]["status"] in ("success", "failed"),
    )
    errors = httpx.get(f"{api.url}/pcm/jobs/{job_id}/errors", headers=headers).json()["data"]
    assert errors, "the duplicated SKU is reported"
    assert all(e["type"] == "pim-job-error" and e["id"] for e in errors)
    assert any("sku" in e["attributes"]["message"] for e in errors)
