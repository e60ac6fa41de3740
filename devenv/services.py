"""The product's own processes in the dev environment: the operator and the upload API.

They run as local processes against the local control plane and MinIO, the way a
developer iterates on them; the chart's Deployments (charts/productimport) are proven
separately on the process node.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from devenv.controlplane import Component, DevEnv, _http_ok
from devenv.layout import REPO

CATALOG_BUCKET = "catalog"
UPLOAD_BUCKET = "uploads"


def api_token(env: DevEnv) -> str:
    """A static token allowed on every namespace, generated once per dev directory."""
    path = env.layout.root / "api-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _console_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def components(env: DevEnv) -> list[Component]:
    p = env.layout.ports
    base = env.env()
    operator = Component(
        "operator",
        [_console_script("productimport-operator")],
        lambda: _http_ok(f"http://127.0.0.1:{p.operator_health}/healthz"),
        env={
            **base,
            "PRODUCTIMPORT_OPERATOR_HEALTH_HOST": "127.0.0.1",
            "PRODUCTIMPORT_OPERATOR_HEALTH_PORT": str(p.operator_health),
            "PRODUCTIMPORT_OPERATOR_METRICS_PORT": str(p.operator_health + 1),
            "PRODUCTIMPORT_OPERATOR_STORE": f"s3://{CATALOG_BUCKET}",
            # The process node has no images: the loader is this checkout's command.
            "PRODUCTIMPORT_OPERATOR_LOADER_COMMAND": json.dumps(["productimport"]),
            "PYTHONPATH": str(REPO),
        },
    )
    tokens = {"tokens": [{"name": "dev-admin", "token": api_token(env), "namespaces": ["*"]}]}
    api = Component(
        "api",
        [_console_script("productimport-api")],
        lambda: _http_ok(f"http://127.0.0.1:{p.api}/healthz"),
        env={
            **base,
            "PRODUCTIMPORT_API_HOST": "127.0.0.1",
            "PRODUCTIMPORT_API_PORT": str(p.api),
            "PRODUCTIMPORT_API_AUTH_MODE": "static",
            "PRODUCTIMPORT_API_TOKENS": json.dumps(tokens),
            "PRODUCTIMPORT_API_UPLOAD_BUCKET": UPLOAD_BUCKET,
            "PRODUCTIMPORT_API_CATALOG_BUCKET": CATALOG_BUCKET,
        },
    )
    return [operator, api]


def service_env(env: DevEnv) -> dict[str, str]:
    return {
        "PRODUCTIMPORT_API_URL": f"http://127.0.0.1:{env.layout.ports.api}",
        "PRODUCTIMPORT_API_TOKEN": api_token(env),
    }
