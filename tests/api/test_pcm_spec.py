"""The Elastic Path route's refusals as its specification gives them, over real HTTP:
over 50 MB is "503 client read error", a body that is not a multipart form is 400, and
the 50,000-row limit counts the rows of a gzipped file's text."""

from __future__ import annotations

import gzip
import re

import httpx
from api_testdata import announce_upload
from test_upload_http import imports_in, incomplete_uploads, uploads_under

MiB = 1024 * 1024
BOUNDARY = "pcm-spec-boundary"
PCM_HEADER = b"external_ref,name,description,slug,status,commodity_type,sku\n"


def rows_csv(n: int) -> bytes:
    """The header and n - 1 products: n rows including the header."""
    lines = [PCM_HEADER]
    lines += [f"ref-{i},Product {i},About {i},product-{i},live,physical,sku-{i}\n".encode()
              for i in range(1, n)]  # fmt: skip
    return b"".join(lines)


def assert_nothing_stored(api, minio, kube, namespace: str) -> None:
    bucket = api.settings.upload_bucket
    assert uploads_under(minio, bucket, f"{namespace}/") == []
    assert incomplete_uploads(minio, bucket, f"{namespace}/") == []
    assert imports_in(kube, namespace) == []


def assert_envelope(r: httpx.Response, status: int, title: str) -> str:
    assert r.status_code == status, r.text
    (error,) = r.json()["errors"]
    assert error["status"] == str(status)
    assert error["title"] == title
    assert error["request_id"] == r.headers["x-request-id"]
    return error["detail"]


def test_over_50_mb_is_503_client_read_error(make_api, fresh_tenant, admin, minio, kube):
    # The seed's own limit (50,000,000 bytes), a file one line over it, few rows.
    api = make_api(pcm_namespace=fresh_tenant)
    assert api.settings.pcm_max_bytes == 50 * 1000 * 1000
    line = b"x" * 9999 + b"\n"
    body = PCM_HEADER + line * (api.settings.pcm_max_bytes // len(line) + 1)
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=admin,
        files={"file": ("big.csv", body, "text/csv")},
        timeout=300,
    )
    detail = assert_envelope(r, 503, "client read error")
    assert "50000000 bytes" in detail
    assert_nothing_stored(api, minio, kube, fresh_tenant)


def test_a_file_at_the_limit_is_accepted_one_byte_over_is_503(make_api, fresh_tenant, admin):
    api = make_api(pcm_namespace=fresh_tenant, pcm_max_bytes=2000)
    body = rows_csv(10)
    body += b"x" * (2000 - len(body) - 1) + b"\n"
    url = f"{api.url}/pcm/products/import"
    r = httpx.post(url, headers=admin, files={"file": ("p.csv", body, "text/csv")})
    assert r.status_code == 201, r.text
    r = httpx.post(url, headers=admin, files={"file": ("p.csv", body + b"y", "text/csv")})
    assert_envelope(r, 503, "client read error")


def test_a_declared_length_far_over_the_limit_is_503_before_the_body(make_api, fresh_tenant, admin):
    api = make_api(pcm_namespace=fresh_tenant)
    url = f"{api.url}/pcm/products/import"
    answer = announce_upload(url, admin["Authorization"], 1024 * MiB, BOUNDARY)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    assert re.search(rb"(?im)^connection: close\r?$", head)
    assert b'"title":"client read error"' in body


def test_a_body_that_is_not_a_multipart_form_is_400(make_api, fresh_tenant, admin, minio, kube):
    api = make_api(pcm_namespace=fresh_tenant)
    url = f"{api.url}/pcm/products/import"
    for content_type in ("text/csv", "application/json", "application/x-www-form-urlencoded"):
        r = httpx.post(url, headers={**admin, "Content-Type": content_type}, content=rows_csv(3))
        detail = assert_envelope(r, 400, "Bad Request")
        assert "multipart/form-data" in detail
    r = httpx.post(url, headers=admin, content=rows_csv(3))  # no Content-Type at all
    assert_envelope(r, 400, "Bad Request")
    assert_nothing_stored(api, minio, kube, fresh_tenant)


def test_a_form_over_its_part_limit_is_400_here(make_api, fresh_tenant, admin):
    api = make_api(pcm_namespace=fresh_tenant)
    parts = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode()
        for i in range(200)
    )
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers={**admin, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=parts + f"--{BOUNDARY}--\r\n".encode(),
    )
    assert "parts" in assert_envelope(r, 400, "Bad Request")


def test_the_row_limit_counts_a_gzipped_files_rows(make_api, fresh_tenant, admin, minio, kube):
    """50,001 rows gzipped are some hundred kilobytes with far fewer than 50,000 newline
    bytes: counted in the compressed bytes they passed; counted in the text they do not."""
    api = make_api(pcm_namespace=fresh_tenant)
    assert api.settings.pcm_max_rows == 50_000
    over = gzip.compress(rows_csv(50_001))
    assert over.count(b"\n") < 50_000
    r = httpx.post(
        f"{api.url}/pcm/products/import",
        headers=admin,
        files={"file": ("p.csv.gz", over, "application/gzip")},
        timeout=120,
    )
    detail = assert_envelope(r, 422, "Failed Validation")
    assert "more than 50000 rows" in detail
    assert_nothing_stored(api, minio, kube, fresh_tenant)


def test_a_gzipped_file_at_the_row_limit_is_accepted(make_api, fresh_tenant, admin):
    api = make_api(pcm_namespace=fresh_tenant, pcm_max_rows=1000)
    url = f"{api.url}/pcm/products/import"
    at_limit = gzip.compress(rows_csv(1000))
    r = httpx.post(url, headers=admin, files={"file": ("p.csv.gz", at_limit, "application/gzip")})
    assert r.status_code == 201, r.text
    over = gzip.compress(rows_csv(1001))
    r = httpx.post(url, headers=admin, files={"file": ("p.csv.gz", over, "application/gzip")})
    assert_envelope(r, 422, "Failed Validation")
