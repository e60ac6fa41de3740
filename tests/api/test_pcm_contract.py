"""Contract: every Elastic Path response the API produces, taken over real HTTP, validates
against the response schema that Elastic Path's published OpenAPI document
(../shared/seeds/elasticpath-pim-openapi.yaml) gives for that operation and status.

A status the document does not list for the operation (401 without a token, 503 over the
size limit, which only its prose names) must still be the document's `error` envelope;
docs/api.md lists those deviations. The schemas are made strict for the check (no
property the document does not declare), and `date-time` formats are validated.

`jsonschema` is not installed; `jsonschema_rs` (schemathesis' validator) is. OpenAPI 3.0
`nullable` is rewritten to JSON Schema's `null` type for it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml
from api_testdata import DATA
from apiserver import start_api

pytestmark = pytest.mark.cluster

SPEC_FILE = Path(DATA).parent / "seeds" / "elasticpath-pim-openapi.yaml"
SPEC = yaml.safe_load(SPEC_FILE.read_text())
PCM_CSV = (DATA / "elasticpath-pcm" / "pim_product_import_example.csv").read_bytes()
WAIT_SECONDS = 300
MiB = 1024 * 1024


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as a strict JSON Schema: `nullable` as a null type, and no
    undeclared properties where the document declares some."""
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


COMPONENTS = {"schemas": json_schema(SPEC["components"]["schemas"])}
ERROR_SCHEMA = {"$ref": "#/components/schemas/error"}


def listed_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    response = SPEC["paths"][path][method]["responses"].get(str(status))
    if response is None:
        return None
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response["content"]["application/json"]["schema"]


def conforms(r: httpx.Response, path: str, method: str, *, listed: bool = True) -> dict:
    """Validate the response against the document's schema for (path, method, status)."""
    schema = listed_schema(path, method, r.status_code)
    if listed:
        assert schema is not None, f"{method} {path} {r.status_code} is not in the document"
    else:
        assert schema is None, f"{method} {path} {r.status_code} is listed: validate it"
        schema = ERROR_SCHEMA
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    errors = violations(schema, body)
    assert not errors, (method, path, r.status_code, errors, body)
    return body


def violations(schema: dict[str, Any], body: Any) -> list[str]:
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": COMPONENTS}, validate_formats=True
    )
    return [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]


def test_the_check_bites() -> None:
    """The document's own examples pass; a field it does not declare, a status it does
    not know or a timestamp that is not one fail."""
    single = {"$ref": "#/components/schemas/single"}
    good = SPEC["components"]["examples"]["cancelled"]["value"]
    assert violations(single, good) == []
    bad = {"data": {**good["data"], "attributes": {**good["data"]["attributes"]}}}
    bad["data"]["attributes"]["status"] = "queued"
    assert violations(single, bad)
    bad["data"]["attributes"] = {**good["data"]["attributes"], "created_at": "yesterday"}
    assert violations(single, bad)
    assert violations(single, {"data": {**good["data"], "name": "x"}})
    assert violations(ERROR_SCHEMA, {"errors": [{"status": "400"}]})  # no title
    example = SPEC["components"]["responses"]["internal"]["content"]["application/json"]
    assert violations(ERROR_SCHEMA, example["examples"]["internal-server-error"]["value"]) == []


@pytest.fixture(scope="module")
def store(cluster) -> str:
    return cluster.namespace("pcm-contract")


@pytest.fixture(scope="module")
def pcm(api_settings, store):
    # Room for a file large enough to keep the loader busy for seconds (cancel cases).
    running = start_api(
        api_settings(pcm_namespace=store, pcm_max_rows=2_000_000, pcm_max_bytes=200 * MiB)
    )
    yield running
    running.stop()


def wait_job(pcm, admin, job_id: str, done) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        r = httpx.get(f"{pcm.url}/pcm/jobs/{job_id}", headers=admin)
        data = conforms(r, "/pcm/jobs/{jobID}", "get")["data"]
        if done(data["attributes"]["status"]):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.3)


def many_rows(n: int) -> bytes:
    header = b"external_ref,name,sku,slug,commodity_type,description,status\n"
    rows = "".join(f"ref-{i},Product {i},sku-{i},product-{i},physical,About {i},live\n"
                   for i in range(n))  # fmt: skip
    return header + rows.encode()


def test_import_and_job_reads_conform(pcm, admin):
    r = httpx.post(
        f"{pcm.url}/pcm/products/import",
        headers=admin,
        files={"file": ("p.csv", PCM_CSV, "text/csv")},
    )
    assert r.status_code == 201, r.text
    job = conforms(r, "/pcm/products/import", "post")["data"]
    done = wait_job(pcm, admin, job["id"], lambda s: s in ("success", "failed"))
    assert done["attributes"]["status"] == "success"
    assert done["attributes"]["started_at"] and done["attributes"]["completed_at"]
    r = httpx.get(f"{pcm.url}/pcm/jobs", headers=admin)
    assert r.status_code == 200
    assert job["id"] in [j["id"] for j in conforms(r, "/pcm/jobs", "get")["data"]]
    r = httpx.get(f"{pcm.url}/pcm/jobs/{job['id']}/errors", headers=admin)
    assert conforms(r, "/pcm/jobs/{jobID}/errors", "get") == {"data": []}
    # Final: the seed cancels pending jobs only, and says so with 422.
    r = httpx.post(f"{pcm.url}/pcm/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 422, r.text
    conforms(r, "/pcm/jobs/{jobID}/cancel", "post")


def test_job_errors_conform(pcm, admin):
    lines = PCM_CSV.decode().splitlines()
    dup = "\n".join([*lines, lines[1].replace(lines[1].split(",")[0], "dup-ref", 1)]) + "\n"
    r = httpx.post(
        f"{pcm.url}/pcm/products/import",
        headers=admin,
        files={"file": ("dup.csv", dup.encode(), "text/csv")},
    )
    job = conforms(r, "/pcm/products/import", "post")["data"]
    wait_job(pcm, admin, job["id"], lambda s: s in ("success", "failed"))
    r = httpx.get(f"{pcm.url}/pcm/jobs/{job['id']}/errors", headers=admin)
    errors = conforms(r, "/pcm/jobs/{jobID}/errors", "get")["data"]
    assert errors and all(e["type"] == "pim-job-error" for e in errors)


def test_cancel_conforms_for_a_pending_and_a_started_job(pcm, admin, store):
    big = httpx.post(
        f"{pcm.url}/pcm/products/import",
        headers=admin,
        files={"file": ("big.csv", many_rows(1_000_000), "text/csv")},
        timeout=300,
    )
    big_job = conforms(big, "/pcm/products/import", "post")["data"]
    small = httpx.post(
        f"{pcm.url}/pcm/products/import",
        headers=admin,
        files={"file": ("p.csv", PCM_CSV, "text/csv")},
    )
    small_job = conforms(small, "/pcm/products/import", "post")["data"]
    # Pending behind the big one (one job at a time): cancellable, 200 `cancelled`.
    r = httpx.post(f"{pcm.url}/pcm/jobs/{small_job['id']}/cancel", headers=admin)
    assert r.status_code == 200, r.text
    cancelled = conforms(r, "/pcm/jobs/{jobID}/cancel", "post")["data"]
    assert cancelled["attributes"]["status"] == "cancelled"
    wait_job(pcm, admin, big_job["id"], lambda s: s != "pending")
    r = httpx.post(f"{pcm.url}/pcm/jobs/{big_job['id']}/cancel", headers=admin)
    if r.status_code == 422:  # started (or already over): not cancellable here
        conforms(r, "/pcm/jobs/{jobID}/cancel", "post")
    # The native route cancels a running import; free the store for the other tests.
    name = next(
        o["name"]
        for o in httpx.get(
            f"{pcm.url}/api/v1/namespaces/{store}/catalogs/main/imports", headers=admin
        ).json()["items"]
        if o["uid"] == big_job["id"]
    )
    httpx.post(f"{pcm.url}/api/v1/namespaces/{store}/catalogs/main/imports/{name}/cancel",
               headers=admin)  # fmt: skip
    wait_job(pcm, admin, big_job["id"], lambda s: s in ("success", "failed", "cancelled"))
    assert r.status_code == 422, r.text


def test_refusals_conform(pcm, admin, make_api, store):
    url = f"{pcm.url}/pcm/products/import"
    path = "/pcm/products/import"
    # 400: not a multipart form.
    r = httpx.post(url, headers={**admin, "Content-Type": "text/csv"}, content=PCM_CSV)
    assert r.status_code == 400, r.text
    conforms(r, path, "post")
    # 422: not CSV content; no file; over the row limit.
    xlsx = b"PK\x03\x04" + b"\x00" * 300
    r = httpx.post(url, headers=admin, files={"file": ("p.xlsx", xlsx, "application/zip")})
    assert r.status_code == 422, r.text
    conforms(r, path, "post")
    r = httpx.post(url, headers=admin, files={"other": ("p.csv", PCM_CSV, "text/csv")})
    assert r.status_code == 422, r.text
    conforms(r, path, "post")
    small = make_api(pcm_namespace=store, pcm_max_rows=3, pcm_max_bytes=1200)
    r = httpx.post(
        f"{small.url}{path}",
        headers=admin,
        files={"file": ("p.csv", PCM_CSV[:1000], "text/csv")},
    )
    assert r.status_code == 422, r.text
    conforms(r, path, "post")
    # 503 client read error: over the size limit. Named in the document's prose only.
    r = httpx.post(
        f"{small.url}{path}", headers=admin, files={"file": ("p.csv", PCM_CSV, "text/csv")}
    )
    assert r.status_code == 503, r.text
    conforms(r, path, "post", listed=False)
    # 401: no token. The document declares bearer auth but lists no 401.
    r = httpx.post(url, files={"file": ("p.csv", PCM_CSV, "text/csv")})
    assert r.status_code == 401, r.text
    conforms(r, path, "post", listed=False)
    for sub in ("/pcm/jobs", "/pcm/jobs/{jobID}"):
        r = httpx.get(pcm.url + sub.replace("{jobID}", str(uuid.uuid4())))
        assert r.status_code == 401
        conforms(r, sub, "get", listed=False)


def test_not_found_and_invalid_ids_conform(pcm, admin):
    for method, path in (
        ("get", "/pcm/jobs/{jobID}"),
        ("post", "/pcm/jobs/{jobID}/cancel"),
        ("get", "/pcm/jobs/{jobID}/errors"),
    ):
        r = httpx.request(method, pcm.url + path.replace("{jobID}", str(uuid.uuid4())),
                          headers=admin)  # fmt: skip
        assert r.status_code == 404, r.text
        conforms(r, path, method)
        r = httpx.request(method, pcm.url + path.replace("{jobID}", "x" * 65), headers=admin)
        assert r.status_code == 422, r.text
        conforms(r, path, method)


def test_an_internal_error_conforms(api_settings, admin, tmp_path, cluster):
    """500: the cluster is unreachable (a kubeconfig whose server refuses connections)."""
    config = yaml.safe_load(Path(cluster.env["KUBECONFIG"]).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:9"
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    broken = start_api(api_settings(KUBECONFIG=str(kubeconfig)))
    try:
        for method, path in (("get", "/pcm/jobs"), ("get", "/pcm/jobs/{jobID}")):
            r = httpx.request(method, broken.url + path.replace("{jobID}", str(uuid.uuid4())),
                              headers=admin, timeout=120)  # fmt: skip
            assert r.status_code == 500, r.text
            body = conforms(r, path, method)
            assert body["errors"][0]["title"] == "Internal Server Error"
        r = httpx.post(
            f"{broken.url}/pcm/products/import",
            headers=admin,
            files={"file": ("p.csv", PCM_CSV, "text/csv")},
            timeout=120,
        )
        assert r.status_code == 500, r.text
        conforms(r, "/pcm/products/import", "post")
    finally:
        broken.stop()
