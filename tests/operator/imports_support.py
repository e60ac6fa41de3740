"""What the operator's end-to-end tests share: uploading a file, applying a
ProductImport, waiting for it, and finding its Job and loader (imported as
`imports_support`, the way tests/chart imports chart_support)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from minio.error import S3Error

from devenv.waiting import wait_for
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
MAGENTO = DATA / "magento2-sample-data" / "products.csv"  # 1994 valid products


def get(cluster, kind: str, name: str, ns: str) -> dict | None:
    done = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def phase(cluster, name: str, ns: str) -> str | None:
    obj = get(cluster, "productimport", name, ns)
    return ((obj or {}).get("status") or {}).get("phase")


def finished(cluster, name: str, ns: str) -> dict:
    def probe():
        obj = get(cluster, "productimport", name, ns)
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return obj
        return None

    return wait_for(f"{ns}/{name} to finish", probe)


def products_csv(rows: int) -> bytes:
    """A valid native-preset file of `rows` generated products (seconds of loader work at
    a few hundred thousand rows: long enough to catch the loader while it runs)."""
    body = "".join(f"P-{i:07d},Product {i},{i % 500}.25,EUR\n" for i in range(rows))
    return ("sku,name,price,currency\n" + body).encode()


def upload(minio, ns: str, data: bytes | Path, suffix: str = ".csv") -> dict[str, str]:
    """Put a file where an import of namespace `ns` may read it (uploads/<ns>/...)."""
    if not minio.bucket_exists("uploads"):
        minio.make_bucket("uploads")
    key = f"{ns}/tests/{uuid.uuid4()}{suffix}"
    body = data.read_bytes() if isinstance(data, Path) else data
    minio.put_object("uploads", key, io.BytesIO(body), len(body))
    return {"bucket": "uploads", "key": key}


def apply(cluster, name: str, ns: str, source: dict, catalog: str = "main", **spec) -> None:
    """`source`: an object ({"bucket", "key"}, as upload() returns) or {"url": ...}."""
    doc = {
        "apiVersion": "catalog.productimport.dev/v1alpha1",
        "kind": "ProductImport",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "catalog": catalog,
            "source": source if "url" in source else {"object": source},
            **spec,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def jobs_of(cluster, ns: str) -> list[dict]:
    return json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]


def events_of(cluster, name: str, ns: str) -> list[str]:
    return [reason for reason, _message in event_messages(cluster, name, ns)]


def event_messages(cluster, name: str, ns: str) -> list[tuple[str, str]]:
    """(reason, message) of the object's Events, oldest first."""
    out = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}",
        "--sort-by", ".lastTimestamp", "-o", "json",
    ).stdout  # fmt: skip
    return [(e["reason"], e.get("message") or "") for e in json.loads(out)["items"]]


def running_loader(cluster, ns: str) -> str | None:
    """The container id of the running loader (containerd://...)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            if "running" in (container.get("state") or {}):
                return container["containerID"]
    return None


def exists(minio, bucket: str, key: str) -> bool:
    try:
        minio.stat_object(bucket, key)
    except S3Error:
        return False
    return True
