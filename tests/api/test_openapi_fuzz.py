"""Schemathesis against /openapi.json: generated requests never get a server error."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from productimport.models.resource import GROUP


def test_openapi_document_lists_every_route(api):
    doc = httpx.get(f"{api.url}/openapi.json").json()
    paths = set(doc["paths"])
    assert {
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/errors",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/cancel",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/products",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/products/{sku}",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/versions",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/rollback",
        "/api/v1/namespaces/{namespace}/catalogs/{catalog}/export",
        "/api/workspace/{workspaceId}/catalog/products/import",
        "/api/workspace/{workspaceId}/jobs/{backgroundJobId}",
        "/pcm/products/import",
        "/pcm/jobs",
        "/pcm/jobs/{jobID}",
        "/pcm/jobs/{jobID}/cancel",
        "/pcm/jobs/{jobID}/errors",
        "/healthz",
        "/metrics",
    } <= paths
    upload = doc["paths"]["/pcm/products/import"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "201" in upload["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert GROUP  # the resources the routes create are this project's


@pytest.fixture(scope="module")
def fuzz_schema(api):
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


fuzz = schemathesis.pytest.from_fixture("fuzz_schema")


@fuzz.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_under_generated_requests(case, api, admin):
    # With a valid token, so generated requests get past authentication into the routes.
    case.call_and_validate(headers=admin, checks=[not_a_server_error], timeout=60)


@fuzz.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_without_credentials(case, api):
    case.call_and_validate(checks=[not_a_server_error], timeout=60)
