"""The dev environment itself: MinIO semantics the engine relies on, and a clean stop."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest

from devenv.controlplane import DevEnv, _established
from devenv.layout import Layout, Ports
from productimport.engine.errors import PreconditionFailed
from productimport.engine.objectstore import MinioObjectStore

pytestmark = pytest.mark.cluster


def test_minio_put_and_get(minio):
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    minio.make_bucket(bucket)
    minio.put_object(bucket, "a/b.txt", io.BytesIO(b"hello"), 5)
    assert minio.get_object(bucket, "a/b.txt").read() == b"hello"


def test_minio_honours_conditional_puts(minio):
    """The catalog pointer moves by If-Match / If-None-Match: MinIO must refuse a stale
    writer, or two concurrent imports could lose each other's updates."""
    store = MinioObjectStore(minio, f"t-{uuid.uuid4().hex[:12]}")
    first = store.put_if("CURRENT", b"v1", None)  # If-None-Match: *
    with pytest.raises(PreconditionFailed):
        store.put_if("CURRENT", b"v1-again", None)  # exists already
    second = store.put_if("CURRENT", b"v2", first)  # If-Match: the etag we read
    with pytest.raises(PreconditionFailed):
        store.put_if("CURRENT", b"v3-stale", first)  # someone moved it since
    data, etag = store.get_with_etag("CURRENT")
    assert data == b"v2" and etag == second


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_a_second_environment_starts_and_stops_leaving_no_process(cluster, tmp_path):
    # Its own directory and ports, beside the session's environment.
    ports = Ports(etcd=33790, etcd_peer=33800, apiserver=36443, controller_manager=30257,
                  minio=39000, minio_console=39001, api=38080, operator_health=38081)  # fmt: skip
    env = DevEnv(Layout(tmp_path / "dev", ports))
    try:
        values = env.up(with_services=False)
        assert env.kubectl("get", "--raw", "/readyz").stdout == "ok"
        assert values["MINIO_ENDPOINT"] == "127.0.0.1:39000"
        assert _processes_mentioning(str(tmp_path))
    finally:
        stopped = env.down()
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "minio", "processnode"} <= set(
        stopped
    )
    assert _processes_mentioning(str(tmp_path)) == []
    assert not (tmp_path / "dev" / "env").exists()


@pytest.mark.parametrize(
    ("status", "established"),
    [
        (None, False),  # just created: the apiserver has not written a status yet
        ({}, False),
        ({"conditions": None}, False),
        ({"conditions": [{"type": "NamesAccepted", "status": "True"}]}, False),
        ({"conditions": [{"type": "Established", "status": "False"}]}, False),
        ({"conditions": [{"type": "Established", "status": "True"}]}, True),
    ],
)
def test_a_crd_counts_as_served_only_once_established(status, established):
    crd = {"metadata": {"name": "productimports.example.com"}}
    if status is not None:
        crd["status"] = status
    assert _established(crd) is established
