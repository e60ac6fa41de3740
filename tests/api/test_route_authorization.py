"""Every route but the public ones authorizes through a dependency (security.authorized),
so a route added without one fails here, not in a security review."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from productimport.api.app import create_app
from productimport.api.security import Authorize, CurrentPrincipal

# Probes, Prometheus and the API's own description: no token, on purpose.
PUBLIC = {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

# The verb each route checks, and in which namespace (the path's, the workspace's, the
# token's store): pinned, so a change to either is a deliberate one.
EXPECTED = {
    ("POST", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports"): "create path_namespace",
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports"): "list path_namespace",
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}"): (
        "get path_namespace"
    ),
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/errors"): (
        "get path_namespace"
    ),
    ("POST", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/cancel"): (
        "patch path_namespace"
    ),
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/products"): "get path_namespace",
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/products/{sku}"): (
        "get path_namespace"
    ),
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/versions"): "list path_namespace",
    ("POST", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/rollback"): "patch path_namespace",
    ("GET", "/api/v1/namespaces/{namespace}/catalogs/{catalog}/export"): "get path_namespace",
    ("POST", "/api/workspace/{workspaceId}/catalog/products/import"): "create path_workspace",
    ("GET", "/api/workspace/{workspaceId}/jobs/{backgroundJobId}"): "get path_workspace",
    ("POST", "/pcm/products/import"): "create store_namespace",
    ("GET", "/pcm/jobs"): "list store_namespace",
    ("GET", "/pcm/jobs/{jobID}"): "get store_namespace",
    ("POST", "/pcm/jobs/{jobID}/cancel"): "patch store_namespace",
    ("GET", "/pcm/jobs/{jobID}/errors"): "get store_namespace",
}


def authorizations(dependant: Dependant) -> Iterator[Authorize]:
    """The authorization dependencies anywhere in a route's dependency tree."""
    if isinstance(dependant.call, Authorize):
        yield dependant.call
    for sub in dependant.dependencies:
        yield from authorizations(sub)


def route_checks(route: RouteContext) -> list[Authorize] | None:
    """None for a route that cannot carry dependencies (a mount, a plain Starlette route)."""
    if not isinstance(route.original_route, APIRoute):
        return None
    return list(authorizations(route.dependant))


def unauthorized_routes(app: FastAPI) -> list[str]:
    """Non-public routes without an authorization dependency (included routers too)."""
    missing = []
    for route in iter_route_contexts(app.routes):
        if route.path not in PUBLIC and not route_checks(route):
            missing.append(f"{sorted(route.methods or ())} {route.path}")
    return missing


def test_every_non_public_route_has_an_authorization_dependency(api_settings) -> None:
    app = create_app(api_settings())
    assert unauthorized_routes(app) == []
    paths = {route.path for route in iter_route_contexts(app.routes)}
    assert paths >= PUBLIC, "a public route is gone: update PUBLIC"
    for route in iter_route_contexts(app.routes):
        if route.path in PUBLIC:
            assert not route_checks(route), f"{route.path} is public but checks a token"


def test_the_walk_finds_a_route_added_without_authorization(api_settings) -> None:
    app = create_app(api_settings())

    @app.get("/api/v1/namespaces/{namespace}/secrets")
    async def leak(namespace: str, principal: CurrentPrincipal) -> dict[str, str]:
        return {}  # authenticated only: any valid token, any namespace

    assert unauthorized_routes(app) == ["['GET'] /api/v1/namespaces/{namespace}/secrets"]


def test_each_route_checks_the_verb_it_always_has(api_settings) -> None:
    app = create_app(api_settings())
    found = {}
    for route in iter_route_contexts(app.routes):
        checks = route_checks(route)
        if not checks:
            continue
        assert len(checks) == 1, f"{route.path} authorizes more than once"
        for method in route.methods or ():
            found[(method, route.path)] = f"{checks[0].verb} {checks[0].namespace_of.__name__}"
    assert found == EXPECTED


def test_a_malformed_request_is_422_even_without_access(api, other_tenant, tokens):
    """Authorization runs after the route's parameters are validated, as it did when it
    sat in the route bodies: 401 without a token, else 422 for a malformed request
    whoever sends it, and only then 403."""
    theirs = f"{api.url}/api/v1/namespaces/{other_tenant}/catalogs"
    workspace = f"{api.url}/api/workspace/ws_elsewhere"
    for method, url in (
        ("POST", f"{theirs}/Not_A_Catalog/imports"),
        ("GET", f"{theirs}/main/imports?limit=0"),
        ("GET", f"{theirs}/main/imports/-bad-name-"),
        ("GET", f"{theirs}/main/products?offset=-1"),
        ("GET", f"{workspace}/jobs/not-a-uuid"),
        ("POST", f"{workspace}/catalog/products/import?catalog_id="),
        ("POST", f"{theirs}/main/imports/-bad-name-/cancel"),
    ):
        assert httpx.request(method, url).status_code == 401, url
        r = httpx.request(method, url, headers=tokens["a"])
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "unprocessable_entity"
    r = httpx.get(f"{theirs}/main/imports?limit=1", headers=tokens["a"])
    assert r.status_code == 403, r.text
