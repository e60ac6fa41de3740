"""Uploads over real HTTP into a real MinIO, creating real ProductImports."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import httpx
from api_testdata import DATA

from productimport.models.resource import GROUP, PLURAL, VERSION

PCM_CSV = DATA / "elasticpath-pcm" / "pim_product_import_example.csv"
MAGENTO = DATA / "magento2-sample-data" / "products.csv"


def native_url(api, namespace: str, catalog: str = "main") -> str:
    return f"{api.url}/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports"


def test_upload_streams_the_file_and_creates_the_resource(api, tenant, admin, minio, kube):
    body = MAGENTO.read_bytes()  # 1.7 MB
    r = httpx.post(
        native_url(api, tenant),
        headers=admin,
        files={"file": ("products.csv", body, "text/csv")},
        data={"preset": "native", "mode": "upsert", "dryRun": "true"},
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["phase"] == "Queued"
    assert accepted["statusUrl"].endswith(f"/imports/{accepted['name']}")
    obj = kube.get_namespaced_custom_object(GROUP, VERSION, tenant, PLURAL, accepted["name"])
    assert obj["metadata"]["uid"] == accepted["uid"]
    spec = obj["spec"]
    assert spec["catalog"] == "main"
    assert spec["format"] == "csv"
    assert spec["dryRun"] is True
    assert spec["preset"] == "native"
    source = spec["source"]["object"]
    # The key is generated: never the client's file name.
    assert "products.csv" not in source["key"]
    assert source["key"].startswith(f"{tenant}/main/")
    stored = minio.get_object(source["bucket"], source["key"]).read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(body).hexdigest()
    assert r.headers["x-request-id"] == obj["metadata"]["annotations"][f"{GROUP}/request-id"]


def test_a_file_larger_than_a_part_goes_up_in_parts(make_api, tenant, admin, minio, kube):
    api = make_api(part_size=5 * 1024 * 1024, parts_in_flight=2)
    body = os.urandom(16).hex().encode() * (13 * 1024 * 1024 // 32)  # 13 MiB: three parts
    body = b"sku,name\n" + body
    r = httpx.post(
        native_url(api, tenant),
        headers=admin,
        files={"file": ("big.csv", body, "text/csv")},
        timeout=120,
    )
    assert r.status_code == 202, r.text
    obj = kube.get_namespaced_custom_object(GROUP, VERSION, tenant, PLURAL, r.json()["name"])
    source = obj["spec"]["source"]["object"]
    stat = minio.stat_object(source["bucket"], source["key"])
    assert stat.size == len(body)
    assert "-3" in stat.etag  # a multipart object of three parts
    stored = minio.get_object(source["bucket"], source["key"]).read()
    assert stored == body


def test_gzipped_json_lines_are_accepted(api, tenant, admin, kube):
    lines = b'{"sku": "a", "name": "A"}\n{"sku": "b", "name": "B"}\n'
    r = httpx.post(
        native_url(api, tenant),
        headers=admin,
        files={"file": ("feed.jsonl.gz", gzip.compress(lines), "application/gzip")},
        data={"format": "jsonl"},
    )
    assert r.status_code == 202, r.text
    obj = kube.get_namespaced_custom_object(GROUP, VERSION, tenant, PLURAL, r.json()["name"])
    assert obj["spec"]["format"] == "jsonl"


def uploads_under(minio, bucket: str, prefix: str) -> list[str]:
    return [o.object_name for o in minio.list_objects(bucket, prefix=prefix, recursive=True)]


def incomplete_uploads(minio, bucket: str, prefix: str = "") -> list[str]:
    """The bucket's incomplete multipart uploads under `prefix`. Listed whole and then
    filtered: with a prefix in the request, MinIO lists only an object of exactly that
    name, so a prefixed listing is always empty and checks nothing."""
    from productimport.api.stale_uploads import incomplete_uploads as listed

    return [u.object_name for u in listed(minio, bucket) if u.object_name.startswith(prefix)]


def imports_in(kube, namespace: str) -> list[str]:
    objs = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return [o["metadata"]["name"] for o in objs]


def test_over_the_limit_is_413_and_leaves_nothing_behind(
    make_api, fresh_tenant, admin, minio, kube
):
    api = make_api(max_upload_bytes=7 * 1024 * 1024, part_size=5 * 1024 * 1024)
    body = b"sku,name\n" + b"x" * (9 * 1024 * 1024)  # one part sent before the limit hits
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        files={"file": ("big.csv", body, "text/csv")},
        timeout=120,
    )
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["error"]["message"]
    assert r.headers.get("x-request-id")
    bucket = api.settings.upload_bucket
    assert uploads_under(minio, bucket, f"{fresh_tenant}/") == []
    assert incomplete_uploads(minio, bucket, f"{fresh_tenant}/") == []
    assert imports_in(kube, fresh_tenant) == []


def test_chunked_upload_without_content_length_is_limited_too(make_api, fresh_tenant, admin, minio):
    api = make_api(max_upload_bytes=1024 * 1024)
    boundary = "pi-test-boundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.csv"\r\nContent-Type: text/csv\r\n\r\nsku,name\n'
        ).encode()
        for _ in range(40):
            yield b"y" * 65536  # 2.5 MiB in total
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        native_url(api, fresh_tenant),
        headers={**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
        timeout=120,
    )
    assert r.status_code == 413
    assert uploads_under(minio, api.settings.upload_bucket, f"{fresh_tenant}/") == []


def test_spreadsheet_is_415_and_stores_nothing(api, fresh_tenant, admin, minio, kube):
    xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00" + os.urandom(4000)
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        files={"file": ("products.xlsx", xlsx, "application/octet-stream")},
    )
    assert r.status_code == 415, r.text
    assert "ZIP" in r.json()["error"]["message"]
    assert uploads_under(minio, api.settings.upload_bucket, f"{fresh_tenant}/") == []
    assert imports_in(kube, fresh_tenant) == []


def test_declared_format_must_match_the_content_422(api, fresh_tenant, admin, minio, kube):
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        files={"file": ("products.csv", PCM_CSV.read_bytes(), "text/csv")},
        data={"format": "json"},
    )
    assert r.status_code == 422, r.text
    assert "declared as json" in r.json()["error"]["message"]
    assert uploads_under(minio, api.settings.upload_bucket, f"{fresh_tenant}/") == []
    assert imports_in(kube, fresh_tenant) == []


def test_unknown_option_values_and_missing_file_are_422(api, fresh_tenant, admin):
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        files={"file": ("p.csv", PCM_CSV.read_bytes(), "text/csv")},
        data={"mode": "obliterate"},
    )
    assert r.status_code == 422
    assert "mode" in r.json()["error"]["message"]
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        data={"format": "csv"},
        files={"other": ("p.csv", b"sku\n1\n", "text/csv")},
    )
    assert r.status_code == 422
    assert "'file'" in r.json()["error"]["message"]


def test_not_multipart_is_415(api, tenant, admin):
    r = httpx.post(native_url(api, tenant), headers=admin, content=b"sku,name\n1,a\n")
    assert r.status_code == 415


def test_request_ids_are_echoed_or_made(api, tenant, admin):
    r = httpx.get(f"{api.url}/healthz", headers={"X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    # A header value that is not plain ASCII (sent as Latin-1 bytes, as a client may).
    r = httpx.get(f"{api.url}/healthz", headers={"X-Request-ID": "bad id\u00e9".encode("latin-1")})
    assert r.headers["x-request-id"] != "bad id"
    assert len(r.headers["x-request-id"]) == 36
    r = httpx.get(native_url(api, tenant) + "/nope", headers=admin)
    assert r.status_code == 404
    assert r.json()["error"]["requestId"] == r.headers["x-request-id"]


def test_metrics_count_uploads(api, tenant, admin):
    httpx.post(
        native_url(api, tenant),
        headers=admin,
        files={"file": ("p.csv", PCM_CSV.read_bytes(), "text/csv")},
    )
    text = httpx.get(f"{api.url}/metrics").text
    assert 'productimport_api_imports_created_total{api="native"}' in text
    assert "productimport_api_upload_bytes_total" in text
    assert 'route="/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports"' in text


def test_every_log_line_of_a_request_carries_its_id(api, tenant, admin, caplog):
    caplog.set_level("INFO")
    r = httpx.post(
        native_url(api, tenant),
        headers={**admin, "X-Request-ID": "log-check-1"},
        files={"file": ("p.csv", PCM_CSV.read_bytes(), "text/csv")},
    )
    assert r.status_code == 202

    def messages() -> str:
        mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "log-check-1"]
        return " | ".join(rec.getMessage() for rec in mine)

    # The server logs the access line once the response is out, so it can land just
    # after the client has the response.
    deadline = time.monotonic() + 10
    while " 202 " not in messages() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stored" in messages()  # the upload's own line
    assert " 202 " in messages()  # the access line
