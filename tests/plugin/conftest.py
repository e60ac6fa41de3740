"""Fixtures for the kubectl plugin's tests: the plugin run as a separate process (as kubectl
runs it), against the dev environment's control plane, MinIO and operator, and an upload
API of this checkout served over real HTTP."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from productimport.api.settings import ApiSettings
from tests.api.apiserver import RunningApi, start_api

REPO = Path(__file__).resolve().parents[2]
PLUGIN = [sys.executable, "-m", "productimport.kubectl_plugin"]
# A bound on waiting for the operator, not a performance assertion.
WAIT_SECONDS = 600
PLUGIN_EMAIL = "plugin-owner@example.com"


@pytest.fixture(scope="session")
def plugin_token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def plugin_api(cluster, plugin_token) -> Iterator[RunningApi]:
    """This checkout's API (the versions and rollback routes included), in static auth mode
    with one token for every namespace, on the dev control plane and MinIO."""
    doc = {"tokens": [{"name": "plugin", "token": plugin_token, "namespaces": ["*"],
                       "email": PLUGIN_EMAIL}]}  # fmt: skip
    settings = ApiSettings(
        auth_mode="static",
        tokens=json.dumps(doc),
        email_enabled=True,
        **{k: cluster.env[k] for k in ("KUBECONFIG", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY")},
        MINIO_SECRET_KEY=cluster.env["MINIO_SECRET_KEY"],
    )
    running = start_api(settings)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def plugin_env(cluster) -> dict[str, str]:
    """The environment a user's shell would give the plugin: their kubeconfig and MinIO
    keys, and no API unless a test passes --api (the dev environment exports one)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRODUCTIMPORT_API_URL", "PRODUCTIMPORT_API_TOKEN")}  # fmt: skip
    env.update(
        KUBECONFIG=str(cluster.kubeconfig),
        MINIO_ACCESS_KEY=cluster.env["MINIO_ACCESS_KEY"],
        MINIO_SECRET_KEY=cluster.env["MINIO_SECRET_KEY"],
        PYTHONPATH=str(REPO),
    )
    env.pop("MINIO_ENDPOINT", None)  # tests name it with --minio-endpoint
    return env


@pytest.fixture(scope="session")
def plugin(plugin_env) -> Callable[..., subprocess.CompletedProcess]:
    """Run `kubectl-productimport ARGS` (as `python -m productimport.kubectl_plugin`)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = WAIT_SECONDS + 60):
        return subprocess.run(
            [*PLUGIN, *args],
            capture_output=True,
            text=True,
            env={**plugin_env, **(env or {})},
            cwd=REPO,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def ns(cluster) -> str:
    return cluster.namespace("plugin")
