"""GET /pcm/jobs/{id}/errors serves a report of any size from MinIO without reading it
whole: the seed's `{"data": [pim-job-error...]}` document, field for field, streamed as
the stored errors.json is parsed."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import httpx
import pytest

from productimport.api.reports import ReportError, iter_json_array
from productimport.api.storage import ensure_bucket
from productimport.models.product import ErrorRecord
from productimport.models.resource import ANNOTATION_CANCEL, GROUP, PLURAL, VERSION

CATALOG = "reports"


def error_records(count: int) -> list[dict[str, Any]]:
    """Records as the loader writes them (ErrorRecord.model_dump), with the characters
    that make JSON parsing interesting: quotes, backslashes, newlines, non-ASCII."""
    records = []
    for i in range(count):
        kind = i % 4
        records.append(
            ErrorRecord(
                line=None if kind == 3 else i + 2,
                column=None if kind == 2 else ("price", 'naïve "name"', "sku")[kind % 3],
                code=("invalid_number", "required", "duplicate_sku", "malformed_row")[kind],
                message=f"row {i}: value \\ is not valid\nsee «docs» ✓",
                value=None if kind == 1 else f'{i}"€',
            ).model_dump()
        )
    return records


def report_bytes(records: list[dict[str, Any]]) -> bytes:
    # Exactly how productimport/engine/runner.py writes errors.json.
    out = io.StringIO()
    json.dump(records, out, ensure_ascii=False)
    return out.getvalue().encode()


def seed_message(record: dict[str, Any]) -> str:
    """The seed's message: `data.attributes.<column>: <message> (line N)`."""
    where = f"data.attributes.{record['column']}: " if record.get("column") else ""
    text = record.get("message") or record.get("code") or "invalid row"
    suffix = f" (line {record['line']})" if record.get("line") else ""
    return f"{where}{text}{suffix}"


def expected_document(job_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    job = uuid.UUID(job_id)
    return {
        "data": [
            {
                "type": "pim-job-error",
                "id": str(uuid.uuid5(job, str(i))),
                "attributes": {"message": seed_message(r)},
            }
            for i, r in enumerate(records)
        ]
    }


@pytest.fixture
def finished_job(fresh_tenant, kube, minio, make_api):
    """A finished ProductImport in a store of its own, and a function that puts an
    errors.json at its report location. Made directly in the cluster, cancelled before
    it can start, so the operator never runs a loader for it."""
    api = make_api(pcm_namespace=fresh_tenant)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProductImport",
        "metadata": {
            "generateName": "report-",
            "namespace": fresh_tenant,
            "annotations": {ANNOTATION_CANCEL: "true"},
        },
        "spec": {
            "catalog": CATALOG,
            "source": {"object": {"bucket": "uploads", "key": "never-read.csv"}},
            "format": "csv",
        },
    }
    obj = kube.create_namespaced_custom_object(GROUP, VERSION, fresh_tenant, PLURAL, body)
    name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
    # Terminal now, whether or not the operator has seen the cancellation yet.
    kube.patch_namespaced_custom_object_status(
        GROUP, VERSION, fresh_tenant, PLURAL, name, {"status": {"phase": "Failed"}}
    )
    ensure_bucket(minio, "catalog")
    key = f"{fresh_tenant}/{CATALOG}/imports/{uid}/errors.json"

    def put_report(data: bytes) -> None:
        minio.put_object("catalog", key, io.BytesIO(data), len(data), "application/json")

    yield api, uid, put_report
    minio.remove_object("catalog", key)


def test_a_large_report_is_served_field_for_field(finished_job, admin):
    api, uid, put_report = finished_job
    records = error_records(150_000)
    data = report_bytes(records)
    assert len(data) > 20 * 1024 * 1024  # far more than one read chunk or one batch
    put_report(data)
    r = httpx.get(f"{api.url}/pcm/jobs/{uid}/errors", headers=admin, timeout=300)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    expected = expected_document(uid, records)
    assert r.json() == expected
    # Byte for byte what the JobErrors model rendered before (compact JSON, UTF-8).
    assert r.content == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()


def test_an_empty_report_and_no_report_keep_their_answers(finished_job, admin):
    api, uid, put_report = finished_job
    r = httpx.get(f"{api.url}/pcm/jobs/{uid}/errors", headers=admin)
    assert r.status_code == 200
    assert r.json() == {"data": []}  # no report object at all
    put_report(b"[]")
    r = httpx.get(f"{api.url}/pcm/jobs/{uid}/errors", headers=admin)
    assert r.json() == {"data": []}


def test_the_report_is_streamed_as_it_is_parsed(finished_job, admin):
    """The report's tail is corrupt. Read whole, that is a 500 before the first byte;
    parsed incrementally, the client has a 200 and megabytes of records by the time the
    parser reaches the corruption, which then cuts the response short (never a valid
    document with records silently missing)."""
    api, uid, put_report = finished_job
    records = error_records(40_000)
    data = report_bytes(records)
    put_report(data[:-1] + b', {"line": 1, "code": "x", "message": ' + b"!" * 2_000_000)
    received = bytearray()
    with httpx.stream("GET", f"{api.url}/pcm/jobs/{uid}/errors", headers=admin) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_bytes():
                received += chunk
    whole = json.dumps(
        expected_document(uid, records), ensure_ascii=False, separators=(",", ":")
    ).encode()
    assert len(received) > 1024 * 1024
    # What arrived is the start of the right document: every record before the tail.
    assert whole.startswith(bytes(received))


@pytest.mark.parametrize(
    "document",
    [
        [],
        [{"a": 1}],
        [1, 23, -4.5e3, True, False, None, "x"],
        [{"line": 2, "message": 'é"\\\n\u2028✓𝄞', "nested": [1, {"b": []}]}, {}],
    ],
)
def test_records_are_decoded_across_any_chunk_boundary(document: list[Any]) -> None:
    """The incremental decoder against the whole-document one: the same values however
    the bytes are split, even inside a multi-byte character, an escape or a number."""
    data = json.dumps(document, ensure_ascii=False, indent=1).encode()
    for size in range(1, len(data) + 1):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(iter_json_array(chunks)) == document


@pytest.mark.parametrize(
    "data",
    [b'{"not": "an array"}', b'[{"a": 1}, {"b": ', b'[{"a": 1} {"b": 2}]', b"[1, 2"],
)
def test_a_report_that_is_not_an_array_of_records_is_an_error(data: bytes) -> None:
    with pytest.raises(ReportError):
        list(iter_json_array([data]))


def test_one_record_larger_than_the_cap_is_an_error_not_a_buffer() -> None:
    huge = b'[{"message": "' + b"x" * 5000 + b'"}]'
    chunks = [huge[i : i + 100] for i in range(0, len(huge), 100)]
    with pytest.raises(ReportError, match="larger than"):
        list(iter_json_array(chunks, max_item_chars=1000))
