"""Attacks on the multipart form itself, sent over real HTTP to the API on real MinIO and
the real API server: an oversized form around the file, and a body cut off before its
closing boundary. Each must be refused, and leave no object, no unfinished multipart
upload and no ProductImport behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from test_upload_http import imports_in, incomplete_uploads, uploads_under

from productimport.api.formstream import (
    MAX_FIELD_NAME_BYTES,
    MAX_FORM_BYTES,
    MAX_PART_HEADER_BYTES,
    MAX_PARTS,
)
from productimport.models.resource import GROUP, PLURAL, VERSION

BOUNDARY = "pi-attack-boundary"
MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the smallest S3 part: a bigger file is in MinIO before the form ends
CSV_HEAD = b"sku,name\n"


def form(*parts: bytes, epilogue: bytes = b"") -> bytes:
    """A multipart body of `parts` (each its headers, a blank line, its content)."""
    delimiter = f"--{BOUNDARY}".encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return body + delimiter + b"--\r\n" + epilogue


def file_part(content: bytes, disposition: str = 'filename="p.csv"') -> bytes:
    return (
        f'Content-Disposition: form-data; name="file"; {disposition}\r\n'.encode()
        + b"Content-Type: text/csv\r\n\r\n"
        + content
    )


def field_part(name: str, value: bytes = b"", extra_headers: str = "") -> bytes:
    disposition = f'{extra_headers}Content-Disposition: form-data; name="{name}"\r\n\r\n'
    return disposition.encode() + value


def csv_rows(size: int) -> bytes:
    """About `size` bytes of CSV rows, each 200 bytes (few rows: under the PCM row cap)."""
    row = b"x" * 190 + b"\n"
    count = size // 200
    return CSV_HEAD + b"".join(b"sku-%05d," % i + row for i in range(count))


def multipart_headers(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def assert_nothing_stored(api, minio, kube, namespace: str) -> None:
    bucket = api.settings.upload_bucket
    assert uploads_under(minio, bucket, f"{namespace}/") == []
    assert incomplete_uploads(minio, bucket, f"{namespace}/") == []
    assert imports_in(kube, namespace) == []


# -- 1. limits on the form around the file ------------------------------------------------


def twenty_thousand_long_names() -> bytes:
    """The reported attack: 20,000 empty fields with 3,000-character names (~62 MB), after
    a file larger than a MinIO part so a multipart upload is open when it starts."""
    fields = [field_part(f"{i:05d}" + "n" * 2995) for i in range(20_000)]
    return form(file_part(csv_rows(PART_SIZE + MiB)), *fields)


def twenty_thousand_short_names() -> bytes:
    fields = [field_part(f"f{i}") for i in range(20_000)]
    return form(file_part(csv_rows(1000)), *fields)


def names_just_under_the_name_limit() -> bytes:
    # Fewer parts than MAX_PARTS, each name under MAX_FIELD_NAME_BYTES: only the total
    # of the form's bytes is over.
    name_len = MAX_FIELD_NAME_BYTES - 8
    count = MAX_FORM_BYTES // name_len + 2
    assert count < MAX_PARTS
    fields = [field_part(f"{i:04d}" + "n" * (name_len - 4)) for i in range(count)]
    return form(file_part(csv_rows(1000)), *fields)


def one_huge_part_header() -> bytes:
    padding = f"X-Padding: {'p' * (MAX_PART_HEADER_BYTES + 10)}\r\n"
    return form(file_part(csv_rows(1000)), field_part("format", b"csv", padding))


def an_unnamed_part_streaming_data() -> bytes:
    # A part the API ignores (no name) still counts: it could otherwise stream forever.
    unnamed = b"Content-Disposition: form-data\r\n\r\n" + b"z" * (MAX_FORM_BYTES + 1)
    return form(file_part(csv_rows(1000)), unnamed)


def an_epilogue_after_the_closing_boundary() -> bytes:
    return form(file_part(csv_rows(1000)), epilogue=b"e" * (MAX_FORM_BYTES + 256 * 1024))


@pytest.mark.parametrize(
    ("build", "code", "words"),
    [
        (twenty_thousand_long_names, "field_name_too_long", "field name is longer than"),
        (twenty_thousand_short_names, "too_many_parts", f"more than {MAX_PARTS} parts"),
        (names_just_under_the_name_limit, "form_too_large", f"than {MAX_FORM_BYTES} bytes"),
        (one_huge_part_header, "part_headers_too_large", "headers are longer than"),
        (an_unnamed_part_streaming_data, "form_too_large", f"than {MAX_FORM_BYTES} bytes"),
        (an_epilogue_after_the_closing_boundary, "form_too_large", f"than {MAX_FORM_BYTES}"),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_an_oversized_form_is_refused_and_stores_nothing(
    build: Callable[[], bytes], code: str, words: str, make_api, fresh_tenant, admin, minio, kube
):
    # max_upload_bytes far above the file: only the form around it is over a limit. The
    # drain budget covers the largest body so the client reads the answer cleanly.
    api = make_api(max_upload_bytes=64 * MiB, part_size=PART_SIZE, max_drain_bytes=128 * MiB)
    body = build()
    r = httpx.post(
        f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports",
        headers=multipart_headers(admin),
        content=body,
        timeout=300,
    )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert_nothing_stored(api, minio, kube, fresh_tenant)


def test_a_form_within_the_limits_is_accepted(make_api, fresh_tenant, admin, kube):
    # The limits leave room for every real client: fields before and after the file,
    # long-ish values, and the CRLF epilogue some clients add.
    api = make_api()
    # A 255-character non-Latin file name, sent raw and percent-encoded (RFC 6266).
    filename = "製品一覧" * 62 + "7.csv"
    disposition = f"filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"
    body = form(
        field_part("preset", b"native"),
        field_part("note", b"v" * 4000),
        file_part(csv_rows(1000), disposition),
        field_part("dryRun", b"true"),
        epilogue=b"\r\n",
    )
    r = httpx.post(
        f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports",
        headers=multipart_headers(admin),
        content=body,
    )
    assert r.status_code == 202, r.text
    obj = kube.get_namespaced_custom_object(GROUP, VERSION, fresh_tenant, PLURAL, r.json()["name"])
    assert obj["spec"]["dryRun"] is True
    assert obj["spec"]["preset"] == "native"
    assert obj["metadata"]["annotations"][f"{GROUP}/original-filename"] == filename[:253]


# -- 2. a body that ends before its closing boundary --------------------------------------


@pytest.fixture
def fresh_workspace(cluster) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    cluster.kubectl("create", "namespace", f"ws-{suffix}")
    return f"ws_{suffix}", f"ws-{suffix}"


def truncated_chunks() -> Iterator[bytes]:
    """A chunked body that ends cleanly (its last chunk is sent) in the middle of the
    file: more than one MinIO part has gone up by then, and no closing boundary."""
    yield f"--{BOUNDARY}\r\n".encode() + file_part(b"")
    data = csv_rows(PART_SIZE + 2 * MiB)
    for start in range(0, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


@pytest.mark.parametrize("route", ["native", "saas", "pcm"])
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_cut_off_before_its_closing_boundary_is_refused(
    route: str, framing: str, make_api, fresh_tenant, fresh_workspace, admin, minio, kube
):
    workspace_id, workspace_ns = fresh_workspace
    # The PCM route acts in the token's home namespace; the admin token has none, so
    # it is the configured pcm_namespace.
    api = make_api(part_size=PART_SIZE, pcm_namespace=fresh_tenant)
    native = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports"
    url, namespace = {
        "native": (native, fresh_tenant),
        "saas": (f"{api.url}/api/workspace/{workspace_id}/catalog/products/import", workspace_ns),
        "pcm": (f"{api.url}/pcm/products/import", fresh_tenant),
    }[route]
    content: Iterator[bytes] | bytes = truncated_chunks()
    if framing == "content-length":
        content = b"".join(truncated_chunks())
    r = httpx.post(url, headers=multipart_headers(admin), content=content, timeout=120)
    assert r.status_code == 400, r.text
    body = r.json()
    detail = body["errors"][0]["detail"] if route == "pcm" else body["error"]["message"]
    assert detail == "the multipart body ended before its closing boundary"
    if route != "pcm":
        assert body["error"]["code"] == "truncated_body"
    assert_nothing_stored(api, minio, kube, namespace)
