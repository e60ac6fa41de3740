"""What a failed or interrupted upload leaves behind, with the faults made real: a create
whose answer the network loses (a proxy in front of the real kube-apiserver), an API that
died mid-upload (a real incomplete multipart upload in the real MinIO), a client whose
connection drops mid-file (a real socket).

MinIO lists incomplete multipart uploads bucket-wide only without a prefix (with one it
lists the uploads of the object of exactly that name), so these tests list the whole of
a bucket of their own, or the whole upload bucket filtered by their namespace.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubeproxy import PRODUCTIMPORTS, KubeProxy
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig
from test_upload_http import imports_in, incomplete_uploads

from devenv.waiting import wait_until
from productimport.api import stale_uploads
from productimport.models.resource import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.cluster

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the smallest S3 part
CSV = b"sku,name\n" + b"".join(b"sku-%04d,Product %04d\n" % (i, i) for i in range(200))


# -- helpers shared with test_idempotency.py ----------------------------------------------


@contextmanager
def private_bucket(minio: Minio, versioned: bool = False) -> Iterator[str]:
    """A bucket of the test's own: sweeping it (threshold 0 included) can touch no other
    test's uploads. Versioned, it keeps every write and every delete as a version."""
    name = f"pi-test-{uuid.uuid4().hex[:12]}"
    minio.make_bucket(name)
    if versioned:
        minio.set_bucket_versioning(name, VersioningConfig(ENABLED))
    try:
        yield name
    finally:
        for upload in minio._list_multipart_uploads(name).uploads:
            minio._abort_multipart_upload(name, upload.object_name, upload.upload_id)
        for obj in minio.list_objects(name, recursive=True, include_version=True):
            minio.remove_object(name, obj.object_name, version_id=obj.version_id)
        minio.remove_bucket(name)


def objects(minio: Minio, bucket: str, prefix: str = "") -> list[str]:
    return [o.object_name for o in minio.list_objects(bucket, prefix=prefix, recursive=True)]


def versions(minio: Minio, bucket: str) -> list[tuple[str, str | None, bool]]:
    """Every version and delete marker: a write and its deletion both stay visible."""
    listed = minio.list_objects(bucket, recursive=True, include_version=True)
    return sorted((o.object_name, o.version_id, o.is_delete_marker) for o in listed)


def uploads_in_progress(api) -> float:
    for line in httpx.get(f"{api.url}/metrics").text.splitlines():
        if line.startswith("productimport_api_uploads_in_progress "):
            return float(line.split()[1])
    raise AssertionError("no productimport_api_uploads_in_progress in /metrics")


def wait_idle(api) -> None:
    """Until the API has finished with every upload (its cleanup included)."""
    wait_until(lambda: uploads_in_progress(api), lambda n: n == 0, "the API to finish uploads")


def native_url(api, namespace: str, catalog: str = "main") -> str:
    return f"{api.url}/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports"


@pytest.fixture
def bucket(minio) -> Iterator[str]:
    with private_bucket(minio, versioned=True) as name:
        yield name


@pytest.fixture
def kube_proxy(cluster) -> Iterator[KubeProxy]:
    proxy = KubeProxy(Path(cluster.env["KUBECONFIG"]))
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_api(make_api, kube_proxy, bucket, tmp_path):
    """An API whose kube-apiserver is reached through the fault proxy, storing into the
    test's own bucket (the operator refuses that source at once: no loader runs)."""

    def make(**overrides: Any):
        kubeconfig = kube_proxy.write_kubeconfig(tmp_path)
        return make_api(KUBECONFIG=str(kubeconfig), upload_bucket=bucket, **overrides)

    return make


def resource(kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


# -- 1. a create whose answer is lost -----------------------------------------------------


@pytest.mark.parametrize("fault", ["drop-answer", "gateway-timeout"])
def test_a_lost_create_answer_keeps_the_object_of_the_import_it_made(
    fault, proxied_api, kube_proxy, bucket, fresh_tenant, admin, minio, kube
):
    """The API server creates the ProductImport; its answer never reaches the API (the
    connection closes, or a 504 comes instead). Before: the API deleted the uploaded
    object, so the import that exists pointed at nothing, and the client got a 500."""
    api = proxied_api()
    kube_proxy.on("POST", PRODUCTIMPORTS, fault, times=1)
    r = httpx.post(
        native_url(api, fresh_tenant), headers=admin, files={"file": ("p.csv", CSV, "text/csv")}
    )
    # The import exists either way; what matters first is that its source does too.
    (name,) = imports_in(kube, fresh_tenant)
    source = resource(kube, fresh_tenant, name)["spec"]["source"]["object"]
    assert source["bucket"] == bucket
    assert objects(minio, bucket) == [source["key"]]
    assert minio.get_object(bucket, source["key"]).read() == CSV
    assert r.status_code == 202, r.text
    assert r.json()["name"] == name
    # The first create landed (the proxy saw 201 from the API server); the second was
    # told the name is taken, and the API read its own resource back.
    assert [(s.action, s.status) for s in kube_proxy.creates()] == [(fault, 201), ("forward", 409)]


def test_a_create_that_never_arrived_is_sent_again(
    proxied_api, kube_proxy, bucket, fresh_tenant, admin, minio, kube
):
    api = proxied_api()
    kube_proxy.on("POST", PRODUCTIMPORTS, "drop-request", times=1)
    r = httpx.post(
        native_url(api, fresh_tenant), headers=admin, files={"file": ("p.csv", CSV, "text/csv")}
    )
    assert r.status_code == 202, r.text
    assert imports_in(kube, fresh_tenant) == [r.json()["name"]]
    assert objects(minio, bucket) != []
    assert [(s.action, s.status) for s in kube_proxy.creates()] == [
        ("drop-request", None),
        ("forward", 201),
    ]


def test_no_answer_at_all_keeps_the_object(
    proxied_api, kube_proxy, bucket, fresh_tenant, admin, minio, kube
):
    """Every create and every read of it loses its answer: whether the import exists is
    unknown, so the object stays (503, retry with the Idempotency-Key). It does exist
    here, and its source is there."""
    api = proxied_api()
    kube_proxy.on("POST", PRODUCTIMPORTS, "drop-answer")
    kube_proxy.on("GET", PRODUCTIMPORTS + "/", "drop-answer")
    r = httpx.post(
        native_url(api, fresh_tenant), headers=admin, files={"file": ("p.csv", CSV, "text/csv")}
    )
    (name,) = imports_in(kube, fresh_tenant)
    source = resource(kube, fresh_tenant, name)["spec"]["source"]["object"]
    assert objects(minio, bucket) == [source["key"]]
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "create_outcome_unknown"


def test_a_refused_create_deletes_the_object(
    make_api, bucket, fresh_tenant, admin, minio, kube, cluster, tmp_path
):
    """A definite refusal from the real API server (the API's identity may not create
    ProductImports: 403) means no resource: the object goes. (This held before too: the
    object is kept only while the answer is unknown.)"""
    cluster.kubectl("create", "serviceaccount", "no-rights", "-n", fresh_tenant)
    token = cluster.kubectl("create", "token", "no-rights", "-n", fresh_tenant).stdout.strip()
    real = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    server = real["clusters"][0]["cluster"]
    kubeconfig = tmp_path / "no-rights-kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    api = make_api(KUBECONFIG=str(kubeconfig), upload_bucket=bucket)
    r = httpx.post(
        native_url(api, fresh_tenant), headers=admin, files={"file": ("p.csv", CSV, "text/csv")}
    )
    assert r.status_code >= 400, r.text
    assert imports_in(kube, fresh_tenant) == []
    # Written, then deleted: a version and its delete marker, nothing current.
    assert objects(minio, bucket) == []
    assert sorted(marker for _, _, marker in versions(minio, bucket)) == [False, True]
    assert incomplete_uploads(minio, bucket) == []


# -- 2. incomplete multipart uploads left by an API that died -----------------------------


def begin_upload(minio: Minio, bucket: str, key: str) -> str:
    """What a killed API leaves: a multipart upload with a part in it, never completed."""
    upload_id = minio._create_multipart_upload(bucket, key, {})
    minio._upload_part(bucket, key, b"x" * PART_SIZE, None, upload_id, 1)
    return upload_id


def test_api_start_aborts_incomplete_uploads_older_than_the_threshold(make_api, minio, caplog):
    with private_bucket(minio) as bucket:
        begin_upload(minio, bucket, "ns-a/main/2026/01/01/dead.upload")
        assert incomplete_uploads(minio, bucket) == ["ns-a/main/2026/01/01/dead.upload"]
        with caplog.at_level(logging.INFO, logger="productimport.api.stale_uploads"):
            make_api(upload_bucket=bucket, abort_incomplete_uploads_after_seconds=0)
        assert incomplete_uploads(minio, bucket) == []
        # The lifecycle rule: set where the store takes it; this MinIO refuses it, and
        # the API says so and starts all the same.
        rule = minio.get_bucket_lifecycle(bucket)
        refused = [r for r in caplog.records if "keeps no rule" in r.getMessage()]
        assert rule is not None or refused
        # With the default threshold (24 h) a fresh upload, as another replica's in
        # flight is, stays.
        begin_upload(minio, bucket, "ns-a/main/2026/01/01/live.upload")
        make_api(upload_bucket=bucket)
        assert incomplete_uploads(minio, bucket) == ["ns-a/main/2026/01/01/live.upload"]


def initiated(minio: Minio, bucket: str) -> dict[str, Any]:
    return {u.upload_id: u.initiated_time for u in minio._list_multipart_uploads(bucket).uploads}


def test_the_sweep_aborts_older_uploads_and_leaves_younger_ones(minio):
    with private_bucket(minio) as bucket:
        old = begin_upload(minio, bucket, "old.upload")
        # MinIO keeps initiation times to the millisecond: begin the young one again until
        # the two differ (the test reads no clock of its own).
        while True:
            young = begin_upload(minio, bucket, "young.upload")
            started = initiated(minio, bucket)
            if started[young] > started[old]:
                break
            minio._abort_multipart_upload(bucket, "young.upload", young)
        gap = started[young] - started[old]
        # "Now" is when the young one began; the limit half the gap: only old is older.
        aborted = stale_uploads.sweep(minio, bucket, (gap / 2).total_seconds(), now=started[young])
        assert aborted == ["old.upload"]
        assert list(initiated(minio, bucket)) == [young]
        assert gap > timedelta(0)


# -- 3. a connection that drops mid-file --------------------------------------------------


def partial_request(api, minio: Minio, token: str, namespace: str, size: int, framing: str) -> None:
    """Send two thirds of a multipart body over a real socket, then close it."""
    boundary = "pi-drop-boundary"
    content = b"sku,name\n" + b"".join(b"sku-%07d,x\n" % i for i in range(size // 14))
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    sent = body[: len(body) * 2 // 3]
    if framing == "chunked":
        length = "Transfer-Encoding: chunked"
        step = 256 * 1024
        chunks = [sent[i : i + step] for i in range(0, len(sent), step)]
        # The last chunk's size says more than is sent: the connection ends mid-chunk.
        sent = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks[:-1])
        sent += b"%x\r\n" % step + chunks[-1]
    else:
        length = f"Content-Length: {len(body)}"
    head = (
        f"POST /api/v1/namespaces/{namespace}/catalogs/main/imports HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{length}\r\n\r\n"
    ).encode()
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + sent)
        wait_until(lambda: uploads_in_progress(api), lambda n: n >= 1, "the upload to start")
        if size > PART_SIZE:
            # Close only once parts of the file are in MinIO.
            bucket, prefix = api.settings.upload_bucket, f"{namespace}/"
            wait_until(
                lambda: incomplete_uploads(minio, bucket, prefix), bool, "a multipart upload"
            )


@pytest.mark.parametrize("size", [MiB, 3 * PART_SIZE], ids=["one-put", "multipart"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_connection_dropped_mid_file_leaves_nothing(
    size, framing, make_api, fresh_tenant, token_values, minio, kube
):
    """The file ends early and the connection closes: no import of a truncated file, no
    object, no incomplete multipart upload (the multipart case has parts in MinIO by
    then). This held before these changes too; it is the other half of a retry."""
    api = make_api(part_size=PART_SIZE)
    partial_request(api, minio, token_values["admin"]["token"], fresh_tenant, size, framing)
    wait_idle(api)
    bucket = api.settings.upload_bucket
    # Aborting the multipart upload is the last thing the API does with the request.
    wait_until(
        lambda: incomplete_uploads(minio, bucket, f"{fresh_tenant}/"), lambda u: u == [], "abort"
    )
    assert objects(minio, bucket, f"{fresh_tenant}/") == []
    assert incomplete_uploads(minio, bucket, f"{fresh_tenant}/") == []
    assert imports_in(kube, fresh_tenant) == []
