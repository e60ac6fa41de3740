"""`Idempotency-Key` on the three upload routes, over real HTTP into a real MinIO and the
real API server. Uploads go to a versioned bucket of the test's own: every object written
stays visible as a version, and every deletion as a delete marker, so "nothing stored"
means no new version at all, not merely no object left."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import pytest
from kubeproxy import PRODUCTIMPORTS
from test_upload_http import imports_in
from test_upload_orphans import (
    CSV,
    bucket,
    kube_proxy,
    objects,
    proxied_api,
    resource,
    versions,
)

from devenv.waiting import wait_until
from productimport.models.resource import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.cluster
# Fixtures of test_upload_orphans: pytest finds a fixture by its name in the module.
SHARED_FIXTURES = (bucket, kube_proxy, proxied_api)

OTHER_CSV = CSV.replace(b"Product", b"Item")


@pytest.fixture
def fresh_workspace(cluster) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    cluster.kubectl("create", "namespace", f"ws-{suffix}")
    return f"ws_{suffix}", f"ws-{suffix}"


@pytest.fixture
def api(make_api, bucket, fresh_tenant):
    # The PCM route acts in the token's home namespace; the admin token has none.
    return make_api(upload_bucket=bucket, pcm_namespace=fresh_tenant)


def upload(
    url: str,
    headers: dict[str, str],
    key: str | None,
    content: bytes = CSV,
    filename: str = "p.csv",
    data: dict[str, str] | None = None,
) -> httpx.Response:
    sent: dict[str, str | bytes] = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key.encode("latin-1")  # httpx sends str as ASCII only
    files = {"file": (filename, content, "text/csv")}
    return httpx.post(url, headers=sent, files=files, data=data or {}, timeout=120)


def route_url(api, route: str, namespace: str, workspace_id: str, catalog: str = "main") -> str:
    return {
        "native": f"{api.url}/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports",
        "saas": f"{api.url}/api/workspace/{workspace_id}/catalog/products/import",
        "pcm": f"{api.url}/pcm/products/import",
    }[route]


def identity(route: str, body: dict[str, Any]) -> Any:
    """What must be the same in both answers (a phase may have moved on meanwhile)."""
    if route == "native":
        return {k: v for k, v in body.items() if k != "phase"}
    if route == "pcm":
        return body["data"]["id"], body["data"]["type"], body["data"]["attributes"]["created_at"]
    return body


@pytest.mark.parametrize("route", ["native", "saas", "pcm"])
def test_a_retry_with_the_key_is_answered_with_the_first_import_and_stores_nothing(
    route, api, bucket, fresh_tenant, fresh_workspace, admin, minio, kube
):
    workspace_id, workspace_ns = fresh_workspace
    namespace = workspace_ns if route == "saas" else fresh_tenant
    url = route_url(api, route, fresh_tenant, workspace_id)
    key = str(uuid.uuid4())
    first = upload(url, admin, key)
    assert first.status_code in (201, 202), first.text
    assert "idempotent-replayed" not in first.headers
    stored = versions(minio, bucket)
    assert len(stored) == 1

    again = upload(url, admin, key)
    assert len(imports_in(kube, namespace)) == 1
    assert versions(minio, bucket) == stored  # no second object, not even for a moment
    assert again.status_code == first.status_code, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert identity(route, again.json()) == identity(route, first.json())


def test_the_key_with_another_request_is_422_and_stores_nothing(
    api, bucket, fresh_tenant, admin, minio, kube
):
    url = route_url(api, "native", fresh_tenant, "")
    key = "order-2026-11-29-0001"
    first = upload(url, admin, key)
    assert first.status_code == 202, first.text
    stored = versions(minio, bucket)
    other_catalog = route_url(api, "native", fresh_tenant, "", catalog="other")
    for changed in (
        upload(url, admin, key, content=OTHER_CSV),
        upload(url, admin, key, filename="q.csv"),
        upload(url, admin, key, data={"dryRun": "true"}),
        upload(other_catalog, admin, key),
    ):
        assert changed.status_code == 422, changed.text
        error = changed.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert error["meta"] == {"import": first.json()["name"]}
    assert versions(minio, bucket) == stored
    assert imports_in(kube, fresh_tenant) == [first.json()["name"]]


def test_a_key_belongs_to_its_namespace_and_route(api, fresh_tenant, fresh_workspace, admin, kube):
    workspace_id, workspace_ns = fresh_workspace
    key = str(uuid.uuid4())
    here = upload(route_url(api, "native", fresh_tenant, ""), admin, key)
    elsewhere = upload(route_url(api, "native", workspace_ns, ""), admin, key)
    other_route = upload(route_url(api, "saas", workspace_ns, workspace_id), admin, key)
    for r in (here, elsewhere, other_route):
        assert r.status_code == 202, r.text
        assert "idempotent-replayed" not in r.headers
    assert len(imports_in(kube, workspace_ns)) == 2
    again = upload(route_url(api, "native", fresh_tenant, ""), admin, key)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["uid"] == here.json()["uid"]


@pytest.mark.parametrize(
    "key",
    ["", "a" * 256, "two words", 'with"quote', "back\\slash", "caf\xe9"],
    ids=["empty", "too-long", "space", "quote", "backslash", "latin-1"],
)
def test_a_malformed_key_is_400_and_stores_nothing(key, api, bucket, fresh_tenant, admin, minio):
    r = upload(route_url(api, "native", fresh_tenant, ""), admin, key)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_idempotency_key"
    assert versions(minio, bucket) == []


def test_the_drafts_quoted_form_is_the_same_key(api, fresh_tenant, admin):
    url = route_url(api, "native", fresh_tenant, "")
    long_key = "k" * 255
    first = upload(url, admin, long_key)
    assert first.status_code == 202, first.text
    quoted = upload(url, admin, f'"{long_key}"')
    assert quoted.headers.get("idempotent-replayed") == "true"
    assert quoted.json()["uid"] == first.json()["uid"]


def test_concurrent_requests_with_one_key_make_one_import(
    proxied_api, kube_proxy, bucket, fresh_tenant, admin, minio, kube
):
    """Both requests find no import for the key and upload; the proxy holds their creates
    until both have arrived, then the API server admits one. The other is told the name
    is taken and answers with the winner's import, deleting the object it wrote."""
    api = proxied_api()
    kube_proxy.on("POST", PRODUCTIMPORTS, "hold")
    url = route_url(api, "native", fresh_tenant, "")
    key = str(uuid.uuid4())
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(upload(url, admin, key))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (name,) = imports_in(kube, fresh_tenant)
    source = resource(kube, fresh_tenant, name)["spec"]["source"]["object"]
    assert objects(minio, bucket) == [source["key"]]
    assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
    assert [r.json()["name"] for r in answers] == [name, name]
    assert sorted(r.headers.get("idempotent-replayed", "") for r in answers) == ["", "true"]
    assert sorted(s.status for s in kube_proxy.creates()) == [201, 409]


def test_a_retry_after_an_unknown_outcome_gets_the_import(
    proxied_api, kube_proxy, bucket, fresh_tenant, admin, minio, kube
):
    """The API server created the import but every answer to the create was lost: 503,
    object kept. The client's retry with the key gets that import; nothing is stored."""
    api = proxied_api()
    lost = kube_proxy.on("POST", PRODUCTIMPORTS, "drop-answer")
    url = route_url(api, "native", fresh_tenant, "")
    key = str(uuid.uuid4())
    first = upload(url, admin, key)
    assert first.status_code == 503, first.text
    kube_proxy.rules.remove(lost)
    stored = versions(minio, bucket)
    again = upload(url, admin, key)
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert imports_in(kube, fresh_tenant) == [again.json()["name"]]
    source = resource(kube, fresh_tenant, again.json()["name"])["spec"]["source"]["object"]
    assert objects(minio, bucket) == [source["key"]]
    assert versions(minio, bucket) == stored


def test_deleting_the_import_frees_its_key(api, bucket, fresh_tenant, admin, minio, kube):
    url = route_url(api, "native", fresh_tenant, "")
    key = str(uuid.uuid4())
    first = upload(url, admin, key)
    assert upload(url, admin, key).headers.get("idempotent-replayed") == "true"
    name = first.json()["name"]
    kube.delete_namespaced_custom_object(GROUP, VERSION, fresh_tenant, PLURAL, name)
    wait_until(lambda: imports_in(kube, fresh_tenant), lambda names: names == [], "the deletion")
    second = upload(url, admin, key)
    assert second.status_code == 202, second.text
    assert "idempotent-replayed" not in second.headers
    assert second.json()["name"] == name
    assert second.json()["uid"] != first.json()["uid"]
    assert len(objects(minio, bucket)) == 2  # stored anew (the first import's stays)
