"""Shared pytest fixtures: the real local control plane and MinIO (devenv/).

`cluster` starts the dev environment once per test session (or reuses the one `make
dev-up` started, and then leaves it running). Nothing is skipped: a component that cannot
be obtained or started fails the tests that need it, with the reason.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from minio import Minio

from devenv.component import ForeignComponent
from devenv.controlplane import DevEnv, DevEnvError


@dataclass
class Cluster:
    devenv: DevEnv
    env: dict[str, str]
    namespaces: list[str] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        return self.devenv.kubectl(*args, check=check, input=input)

    def namespace(self, prefix: str = "t") -> str:
        """A new namespace for one test's objects (tests never share state by accident)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        self.namespaces.append(name)
        return name

    def delete_namespaces(self) -> None:
        """The session's namespaces go when it ends: the environment's etcd outlives
        `make dev-down`, and a developer's cluster would otherwise collect thousands of
        test namespaces and their imports (which every operator start then lists)."""
        if self.namespaces:
            self.kubectl("delete", "namespace", "--wait=false", "--ignore-not-found",
                         *self.namespaces, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    env = DevEnv()
    # Every test session holds a shared lock while it uses the environment, so the one
    # that started it stops it only when no other session (a second terminal) still runs.
    env.layout.root.mkdir(parents=True, exist_ok=True)
    users = open(env.layout.root / "test-sessions.lock", "w")  # noqa: SIM115 (held all session)
    fcntl.flock(users, fcntl.LOCK_SH)
    already_up = any(env.status().values())
    try:
        values = env.up()
    except DevEnvError as exc:
        # Leave nothing half-started behind; but when another environment holds the
        # machine, nothing here was started, and stopping would take its bridge away.
        if not already_up and not isinstance(exc, ForeignComponent):
            env.down()
        pytest.fail(f"the local control plane could not be started: {exc}", pytrace=False)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    cluster = Cluster(env, values)
    yield cluster
    cluster.delete_namespaces()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    # Leave a developer's `make dev-up` environment running; stop what the tests started,
    # unless another session is using it.
    if not already_up and _last_user(users):
        env.down()
    users.close()


def _last_user(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@pytest.fixture(scope="session")
def kube_client(cluster: Cluster) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def kube(kube_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    """Custom resources (ProductImports); `kube.api_client` serves the other APIs."""
    return k8s.CustomObjectsApi(kube_client)


@pytest.fixture(scope="session")
def minio(cluster: Cluster) -> Minio:
    return Minio(
        cluster.env["MINIO_ENDPOINT"],
        access_key=cluster.env["MINIO_ACCESS_KEY"],
        secret_key=cluster.env["MINIO_SECRET_KEY"],
        secure=False,
    )
