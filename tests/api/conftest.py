"""Fixtures for the upload API tests: the API served over real HTTP (uvicorn on
127.0.0.1), talking to the real local control plane and MinIO, with static tokens."""

from __future__ import annotations

import json
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # api_testdata, apiserver

from apiserver import RunningApi, start_api

from productimport.api.settings import ApiSettings

ADMIN_EMAIL = "api-admin@example.com"


@pytest.fixture(scope="session")
def tenant(cluster) -> str:
    return cluster.namespace("api-a")


@pytest.fixture(scope="session")
def other_tenant(cluster) -> str:
    return cluster.namespace("api-b")


@pytest.fixture(scope="session")
def e2e_tenant(cluster) -> str:
    return cluster.namespace("api-e2e")


@pytest.fixture
def fresh_tenant(cluster) -> str:
    return cluster.namespace("api-fresh")


def _workspace(cluster) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    namespace = f"ws-{suffix}"
    cluster.kubectl("create", "namespace", namespace)
    return f"ws_{suffix}", namespace


@pytest.fixture(scope="session")
def workspace(cluster) -> tuple[str, str]:
    """(workspaceId, the namespace it maps to)."""
    return _workspace(cluster)


@pytest.fixture(scope="session")
def e2e_workspace(cluster) -> tuple[str, str]:
    return _workspace(cluster)


@pytest.fixture(scope="session")
def token_values(tenant, other_tenant, e2e_tenant) -> dict[str, dict[str, Any]]:
    return {
        # An address for notify_email on the SaaS route (test_notify_email.py).
        "admin": {"token": secrets.token_urlsafe(24), "namespaces": ["*"], "email": ADMIN_EMAIL},
        "a": {"token": secrets.token_urlsafe(24), "namespaces": [tenant]},
        "b": {"token": secrets.token_urlsafe(24), "namespaces": [other_tenant]},
        "e2e": {"token": secrets.token_urlsafe(24), "namespaces": [e2e_tenant]},
    }


@pytest.fixture(scope="session")
def tokens(token_values) -> dict[str, dict[str, str]]:
    """Authorization headers by token name."""
    return {k: {"Authorization": f"Bearer {v['token']}"} for k, v in token_values.items()}


@pytest.fixture(scope="session")
def admin(tokens) -> dict[str, str]:
    return tokens["admin"]


@pytest.fixture(scope="session")
def tokens_e2e(tokens) -> dict[str, str]:
    return tokens["e2e"]


@pytest.fixture(scope="session")
def api_settings(cluster, token_values) -> Callable[..., ApiSettings]:
    doc = {"tokens": [{"name": k, **v} for k, v in token_values.items()]}

    def make(**overrides: Any) -> ApiSettings:
        values: dict[str, Any] = {
            "auth_mode": "static",
            "tokens": json.dumps(doc),
            # As in the dev environment: the dev operator has an SMTP server.
            "email_enabled": True,
            # These fields are read by their environment names (shared with the loader).
            **{k: cluster.env[k] for k in ("KUBECONFIG", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY")},
            "MINIO_SECRET_KEY": cluster.env["MINIO_SECRET_KEY"],
        }
        # Any of them can be overridden, the auth mode included (kubernetes-mode tests).
        return ApiSettings(**{**values, **overrides})

    return make


@pytest.fixture(scope="session")
def api(api_settings) -> Iterator[RunningApi]:
    running = start_api(api_settings())
    yield running
    running.stop()


@pytest.fixture
def make_api(api_settings) -> Iterator[Callable[..., RunningApi]]:
    """An API with other settings (limits, part sizes) for one test."""
    started: list[RunningApi] = []

    def make(**overrides: Any) -> RunningApi:
        running = start_api(api_settings(**overrides))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()
