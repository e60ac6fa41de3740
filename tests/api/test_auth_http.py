"""401 without a valid token, 403 outside the token's namespaces, 404 across tenants."""

from __future__ import annotations

import httpx
from api_testdata import DATA

CSV = (DATA / "elasticpath-pcm" / "pim_product_import_example.csv").read_bytes()


def upload(api, namespace: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{api.url}/api/v1/namespaces/{namespace}/catalogs/main/imports",
        headers=headers,
        files={"file": ("p.csv", CSV, "text/csv")},
    )


def test_no_token_is_401_on_every_surface(api, tenant):
    for method, path in [
        ("POST", f"/api/v1/namespaces/{tenant}/catalogs/main/imports"),
        ("GET", f"/api/v1/namespaces/{tenant}/catalogs/main/imports"),
        ("GET", f"/api/v1/namespaces/{tenant}/catalogs/main/products"),
        ("POST", "/api/workspace/ws_abc/catalog/products/import"),
        ("GET", "/api/workspace/ws_abc/jobs/3c90c3cc-0d44-4b50-8888-8dd25736052a"),
        ("POST", "/pcm/products/import"),
        ("GET", "/pcm/jobs"),
    ]:
        r = httpx.request(method, api.url + path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(api.url + "/pcm/jobs")
    assert r.json()["errors"][0]["status"] == "401"


def test_wrong_token_is_401(api, tenant):
    r = upload(api, tenant, {"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_token_of_another_namespace_is_403_and_stores_nothing(api, tenant, other_tenant, tokens):
    r = upload(api, other_tenant, tokens["a"])
    assert r.status_code == 403, r.text
    assert other_tenant in r.json()["error"]["message"]
    r = httpx.get(
        f"{api.url}/api/v1/namespaces/{other_tenant}/catalogs/main/imports", headers=tokens["a"]
    )
    assert r.status_code == 403


def test_another_tenants_import_is_404(api, tenant, other_tenant, tokens):
    r = upload(api, other_tenant, tokens["b"])
    assert r.status_code == 202, r.text
    theirs = r.json()
    # Tenant A asks for B's import by name in its own namespace: it does not exist there.
    r = httpx.get(
        f"{api.url}/api/v1/namespaces/{tenant}/catalogs/main/imports/{theirs['name']}",
        headers=tokens["a"],
    )
    assert r.status_code == 404
    # And by job id on the Elastic Path surface (store = the token's namespace).
    r = httpx.get(f"{api.url}/pcm/jobs/{theirs['uid']}", headers=tokens["a"])
    assert r.status_code == 404
    assert r.json()["errors"][0]["title"] == "Not Found"
    r = httpx.get(f"{api.url}/pcm/jobs/{theirs['uid']}", headers=tokens["b"])
    assert r.status_code == 200
