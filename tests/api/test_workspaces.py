"""SaaS workspaces: an unknown one is refused before the body is read, an administrator
can map ids to existing namespaces, and `catalog_id` takes the seed's plain strings."""

from __future__ import annotations

import re
import time
import uuid

import anyio
import httpx
import pytest
from api_testdata import DATA, announce_upload
from test_upload_http import incomplete_uploads

from productimport.api.resources import Namespaces
from productimport.api.routes.saas import ANNOTATION_CATALOG_ID, catalog_name
from productimport.models.resource import GROUP, PLURAL, VERSION

WOO_CSV = (DATA / "woocommerce-sample-data" / "sample_products.csv").read_bytes()
MiB = 1024 * 1024
BOUNDARY = "ws-test-boundary"


def saas_url(api, workspace_id: str) -> str:
    return f"{api.url}/api/workspace/{workspace_id}/catalog/products/import"


def nothing_stored(api, minio, prefix: str) -> None:
    bucket = api.settings.upload_bucket
    assert list(minio.list_objects(bucket, prefix=prefix, recursive=True)) == []
    assert incomplete_uploads(minio, bucket, prefix) == []


def big_form(size: int) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nsku,name\n"
    ).encode()
    return head + b"x" * size + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_an_unknown_workspace_is_404_before_the_body_is_read(api, admin, minio):
    """A client that waits for `100 Continue` (curl does for bodies over 1 MB) gets the
    404 without sending a byte of its 1 GiB file: the API never asked for the body."""
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    answer = announce_upload(saas_url(api, ws), admin["Authorization"], 1024 * MiB, BOUNDARY)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 404"), answer[:300]
    assert b"100 Continue" not in head
    assert re.search(rb"(?im)^connection: close\r?$", head)
    assert b'"code":"workspace_not_found"' in body
    nothing_stored(api, minio, f"{ws.replace('_', '-')}/")


def test_a_large_body_to_an_unknown_workspace_is_refused_and_not_stored(api, admin, minio):
    """A client that sends the body anyway gets the same 404 and nothing is stored: no
    object, no incomplete multipart upload, no resource."""
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    try:
        r = httpx.post(
            saas_url(api, ws),
            headers={**admin, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=big_form(64 * MiB),
            timeout=120,
        )
    except httpx.TransportError as exc:  # pragma: no cover - reported, not tolerated
        pytest.fail(f"the client did not get the 404 but {exc!r}")
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "workspace_not_found"
    assert ws in error["message"]
    assert error["requestId"] == r.headers["x-request-id"]
    assert time.monotonic() - started < 60
    nothing_stored(api, minio, f"{ws.replace('_', '-')}/")
    # The job route says the same for an unknown workspace.
    r = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{uuid.uuid4()}", headers=admin)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "workspace_not_found"


def test_the_native_route_refuses_an_absent_namespace_before_the_body(api, admin, minio):
    namespace = f"absent-{uuid.uuid4().hex[:8]}"
    r = httpx.post(
        f"{api.url}/api/v1/namespaces/{namespace}/catalogs/main/imports",
        headers={**admin, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=big_form(8 * MiB),
        timeout=120,
    )
    assert r.status_code == 404, r.text
    assert "does not exist" in r.json()["error"]["message"]
    nothing_stored(api, minio, f"{namespace}/")


def test_a_mapped_workspace_imports_into_its_namespace(make_api, cluster, admin, kube):
    namespace = cluster.namespace("shop")
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    api = make_api(workspaces={ws: namespace})
    r = httpx.post(saas_url(api, ws), headers=admin, files={"file": ("p.csv", WOO_CSV, "text/csv")})
    assert r.status_code == 202, r.text
    job_id = r.json()["backgroundJobId"]
    objs = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    assert [o["metadata"]["uid"] for o in objs] == [job_id]
    job = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{job_id}", headers=admin)
    assert job.status_code == 200, job.text
    assert job.json()["workspaceId"] == ws
    # The namespace the id would otherwise name does not exist, and is not created.
    unmapped = ws.replace("_", "-")
    assert cluster.kubectl("get", "namespace", unmapped, check=False).returncode != 0


def test_a_workspace_mapped_to_an_absent_namespace_is_404(make_api, admin, minio):
    ws = f"ws_{uuid.uuid4().hex[:10]}"
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    api = make_api(workspaces={ws: absent})
    r = httpx.post(saas_url(api, ws), headers=admin, files={"file": ("p.csv", WOO_CSV, "text/csv")})
    assert r.status_code == 404, r.text
    nothing_stored(api, minio, f"{absent}/")


def test_the_workspace_mapping_is_validated(api_settings):
    with pytest.raises(ValueError):
        api_settings(workspaces={"ws_ok": "Not_A_Namespace"})
    with pytest.raises(ValueError):
        api_settings(workspaces={"WS-bad": "shop"})


def test_a_plain_catalog_id_is_accepted_and_kept(api, workspace, admin, kube):
    ws, namespace = workspace
    r = httpx.post(
        saas_url(api, ws),
        params={"catalog_id": "Cat_1"},
        headers=admin,
        files={"file": ("p.csv", WOO_CSV, "text/csv")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["backgroundJobId"]
    objs = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    (obj,) = [o for o in objs if o["metadata"]["uid"] == job_id]
    assert obj["spec"]["catalog"] == catalog_name("Cat_1")
    assert obj["spec"]["catalog"].startswith("cat-1-")
    assert obj["metadata"]["annotations"][ANNOTATION_CATALOG_ID] == "Cat_1"
    assert obj["spec"]["source"]["object"]["key"].startswith(
        f"{namespace}/{catalog_name('Cat_1')}/"
    )
    job = httpx.get(f"{api.url}/api/workspace/{ws}/jobs/{job_id}", headers=admin).json()
    assert job["catalogId"] == "Cat_1"


def test_a_catalog_id_that_is_already_a_name_is_used_as_it_is(api, workspace, admin, kube):
    ws, namespace = workspace
    r = httpx.post(
        saas_url(api, ws),
        params={"catalog_id": "summer-2025"},
        headers=admin,
        files={"file": ("p.csv", WOO_CSV, "text/csv")},
    )
    assert r.status_code == 202, r.text
    objs = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    (obj,) = [o for o in objs if o["metadata"]["uid"] == r.json()["backgroundJobId"]]
    assert obj["spec"]["catalog"] == "summer-2025"
    assert ANNOTATION_CATALOG_ID not in obj["metadata"]["annotations"]


NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "catalog_id",
    [
        *("Cat_1", "cat_1", "CAT-1", "a", "x" * 63, "x" * 64, "Ünïcødé Çatalog", "___"),
        *("-a-", "1.2.3", "spring/summer 2025", "A" * 253),
    ],
)
def test_catalog_names_are_valid_and_deterministic(catalog_id: str) -> None:
    name = catalog_name(catalog_id)
    assert NAME.match(name) and len(name) <= 63, name
    assert catalog_name(catalog_id) == name
    if NAME.match(catalog_id) and len(catalog_id) <= 63:
        assert name == catalog_id
    else:
        assert re.search(r"-[0-9a-f]{8}$", name), name


def test_ids_that_differ_only_in_invalid_characters_stay_apart() -> None:
    names = {catalog_name(c) for c in ("Cat_1", "cat_1", "CAT_1", "Cat-1", "cat.1", "cat-1")}
    assert len(names) == 6
    assert catalog_name("cat-1") == "cat-1"
    assert catalog_name("Cat_1").startswith("cat-1-")


def test_namespace_answers_positive_cached_negative_not(cluster, kube_client) -> None:
    now = [0.0]
    namespaces = Namespaces(kube_client, ttl=30.0, clock=lambda: now[0])
    name = f"nscache-{uuid.uuid4().hex[:8]}"
    assert anyio.run(namespaces.exists, name) is False
    cluster.kubectl("create", "namespace", name)
    assert anyio.run(namespaces.exists, name) is True  # an absent answer was not kept
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    now[0] = 29.0
    assert anyio.run(namespaces.exists, name) is True  # cached
    now[0] = 31.0
    assert anyio.run(namespaces.exists, name) is False  # asked again: Terminating or gone
