"""The two seed contracts, field for field (see ../shared/seeds/)."""

from __future__ import annotations

import re
import uuid

import httpx
from api_testdata import DATA

from productimport.models.resource import GROUP, PLURAL, VERSION

PCM_CSV = (DATA / "elasticpath-pcm" / "pim_product_import_example.csv").read_bytes()
WOO_CSV = (DATA / "woocommerce-sample-data" / "sample_products.csv").read_bytes()
SEED_JSON = (DATA / "medusa-starter-seed" / "seed.json").read_bytes()
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def test_saas_import_answers_202_with_the_seed_fields(api, workspace, admin, kube):
    ws, namespace = workspace
    r = httpx.post(
        f"{api.url}/api/workspace/{ws}/catalog/products/import",
        params={"catalog_id": "spring"},
        headers=admin,
        # The seed's curl sends the file first, then format: fields after the file count.
        files={"file": ("example-file", WOO_CSV, "text/csv")},
        data={"format": "csv", "notify_email": "true"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"jobId", "backgroundJobId", "queue", "jobName", "status", "notify_email"}
    assert str(uuid.UUID(body["backgroundJobId"])) == body["backgroundJobId"]
    assert body["jobId"] == body["backgroundJobId"]
    assert body["queue"] == "ingest"
    assert body["status"] == "queued"
    assert body["notify_email"] is True
    objs = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    mine = [o for o in objs if o["metadata"]["uid"] == body["backgroundJobId"]]
    assert mine and mine[0]["spec"]["catalog"] == "spring"
    job = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{body['backgroundJobId']}", headers=admin)
    assert job.status_code == 200
    assert job.json()["status"] in ("queued", "active", "completed", "failed")
    assert job.json()["catalogId"] == "spring"


def test_saas_json_format_and_default_notify(api, workspace, admin):
    ws, _ = workspace
    r = httpx.post(
        f"{api.url}/api/workspace/{ws}/catalog/products/import",
        headers=admin,
        files={"file": ("seed.json", SEED_JSON, "application/json")},
        data={"format": "json"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["notify_email"] is False


def test_saas_workspace_pattern_and_unknown_job(api, workspace, admin):
    r = httpx.post(
        f"{api.url}/api/workspace/WS-Bad/catalog/products/import",
        headers=admin,
        files={"file": ("p.csv", WOO_CSV, "text/csv")},
    )
    assert r.status_code == 422
    ws, _ = workspace
    r = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{uuid.uuid4()}", headers=admin)
    assert r.status_code == 404


def test_pcm_import_answers_201_pending_pim_job(api, tenant, tokens):
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers={**tokens["a"], "X-Request-ID": "fad8c5c0-9546-4e0c-b68e-8a2d809891e5"},
        files={"file": ("pim_product_import_example.csv", PCM_CSV, "text/csv")},
    )
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["type"] == "pim-job"
    assert set(data["attributes"]) == {
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
        "type",
        "status",
    }
    assert data["attributes"]["type"] == "product-import"
    assert data["attributes"]["status"] == "pending"
    assert data["attributes"]["started_at"] is None
    assert ISO.match(data["attributes"]["created_at"])
    assert data["meta"] == {"x_request_id": "fad8c5c0-9546-4e0c-b68e-8a2d809891e5"}
    job = httpx.get(f"{api.url}/pcm/jobs/{data['id']}", headers=tokens["a"]).json()["data"]
    assert job["id"] == data["id"]
    listed = httpx.get(f"{api.url}/pcm/jobs", headers=tokens["a"]).json()
    assert data["id"] in [j["id"] for j in listed["data"]]
    assert listed["meta"]["results"]["total"] == len(listed["data"])


def test_pcm_errors_use_the_json_api_envelope(make_api, tenant, tokens):
    api = make_api(pcm_max_rows=3, pcm_max_bytes=1200)
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=tokens["a"],
        files={"file": ("p.csv", PCM_CSV[:1000], "text/csv")},
    )
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["status"] == "422"
    assert err["title"] == "Failed Validation"
    assert "3 rows" in err["detail"]
    assert err["request_id"] == r.headers["x-request-id"]
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=tokens["a"],
        files={"file": ("p.csv", PCM_CSV, "text/csv")},  # 1.7 kB > 1200 bytes
    )
    assert r.status_code == 503  # the seed: over the size limit is "503 client read error"
    assert r.json()["errors"][0]["status"] == "503"
    assert r.json()["errors"][0]["title"] == "client read error"
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=tokens["a"],
        files={"file": ("p.xlsx", b"PK\x03\x04" + b"\x00" * 300, "application/octet-stream")},
    )
    assert r.status_code == 422  # the seed has no 415: content problems are Failed Validation
    r = httpx.get(f"{api.url}/pcm/jobs/{uuid.uuid4()}", headers=tokens["a"])
    assert r.status_code == 404
    assert r.json() == {
        "errors": [
            {
                "status": "404",
                "title": "Not Found",
                "detail": r.json()["errors"][0]["detail"],
                "request_id": r.headers["x-request-id"],
            }
        ]
    }


def test_pcm_default_limits_are_the_seeds(api):
    assert api.settings.pcm_max_rows == 50_000
    assert api.settings.pcm_max_bytes == 50 * 1000 * 1000
