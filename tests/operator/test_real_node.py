"""What only a real node can show: the loader in its container, under the kernel's limits.

The imports run the image built from this checkout on the dev cluster's kubelet
(containerd, runc, cgroups): the memory limit is the kernel's, the root filesystem is
read-only, the user is the image's, and the logs are the kubelet's.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from imports_support import apply, finished, jobs_of, products_csv, running_loader, upload

from devenv import images, node, services
from devenv.component import DevEnvError
from devenv.waiting import wait_for

pytestmark = pytest.mark.cluster

IMAGE_USER = 10001  # the Dockerfile's USER


def _pods(cluster, ns: str) -> list[dict]:
    return json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]


def _step_until(container_id: str, seen: Callable[[], object]) -> object:
    """Let a frozen container run in short steps until `seen()` holds (it stays frozen
    then); what a poll of a running loader could miss, a paused one cannot."""

    def step() -> object:
        node.freeze(container_id, False)
        time.sleep(0.05)
        node.freeze(container_id, True)
        return seen()

    return wait_for("the loader to get there", step, interval=0)


def test_the_loader_runs_as_the_image_user_and_spills_to_its_tmp_volume(cluster, minio):
    """readOnlyRootFilesystem: DuckDB's spill files must land on the /tmp emptyDir (on the
    host, under the kubelet's pod directory), and the import must still succeed."""
    ns = cluster.namespace("node")
    # 600k rows under 128 MB: DuckDB must spill (measured with the CLI), with room to spare.
    apply(
        cluster, "spill", ns, upload(minio, ns, products_csv(600_000)), job={"memoryLimit": "128MB"}
    )
    loader = wait_for("the loader container", lambda: running_loader(cluster, ns))
    node.freeze(loader, True)
    try:
        (pod,) = _pods(cluster, ns)
        uids = {
            int(line.split()[1])
            for pid in node.container_pids(loader)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        }
        assert uids == {IMAGE_USER}
        empty_dir = (
            node.NodePaths(cluster.devenv.layout).root / "kubelet" / "pods"
            / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~empty-dir" / "tmp"
        )  # fmt: skip
        spilled = _step_until(
            loader, lambda: list(empty_dir.glob("productimport-*/duckdb-spill/*.tmp"))
        )
        assert spilled, empty_dir
    finally:
        with contextlib.suppress(OSError, DevEnvError):
            node.freeze(loader, False)
    status = finished(cluster, "spill", ns)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["counts"]["created"] == 600_000


def test_kubectl_logs_of_a_loader_pod_show_its_progress(cluster, minio):
    ns = cluster.namespace("node")
    apply(cluster, "logged", ns, upload(minio, ns, products_csv(50_000)))
    status = finished(cluster, "logged", ns)["status"]
    assert status["phase"] == "Succeeded", status
    logs = cluster.kubectl("logs", "-n", ns, f"job/{status['jobName']}").stdout
    stages = [line.split("progress: ", 1)[1].split()[0] for line in logs.splitlines()
              if "progress: " in line]  # fmt: skip
    assert stages[:1] == ["reading"] and "merging" in stages and stages[-1] == "done", logs
    assert json.loads(logs.splitlines()[-1])["counts"]["created"] == 50_000


def test_a_loader_over_its_memory_limit_is_oomkilled_and_fails_without_a_retry(cluster, minio):
    """The kernel, not DuckDB, stops it: DuckDB may use 2 GB, the container 128 MiB. The
    same limits would fail the same way, so the Job is not retried."""
    ns = cluster.namespace("node")
    resources = {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    job = {"memoryLimit": "2GB", "resources": resources}
    apply(cluster, "oom", ns, upload(minio, ns, products_csv(300_000)), job=job)
    status = finished(cluster, "oom", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "OutOfMemory", status
    assert "killed at its container's memory limit" in status["message"]
    assert status["attempts"] == 1
    (pod,) = _pods(cluster, ns)
    (container,) = pod["status"]["containerStatuses"]
    assert container["state"]["terminated"]["reason"] == "OOMKilled"
    assert container["state"]["terminated"]["exitCode"] == 137


def test_an_absent_image_fails_the_import_with_the_kubelets_reason(cluster, minio):
    ns = cluster.namespace("node")
    absent = "localhost/productimport-absent:never-built"
    with services.operator_with(cluster.devenv, PRODUCTIMPORT_OPERATOR_IMAGE=absent):
        apply(cluster, "noimage", ns, upload(minio, ns, b"sku,name\nA,a\n"))
        status = finished(cluster, "noimage", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ImageUnavailable", status
    assert "ErrImageNeverPull" in status["message"] and absent in status["message"]
    # Nothing is left trying: the Job is gone with its Pod.
    wait_for("the Job to be deleted", lambda: jobs_of(cluster, ns) == [])


def _root_image(cluster) -> str:
    """An image whose user is root: the pause image with its USER set to 0, on the node."""
    ref = "localhost/productimport-root-test:1"
    container = subprocess.run(
        ["buildah", "from", "--pull-never", images.pause_ref()],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        subprocess.run(["buildah", "config", "--user", "0:0", container], check=True)
        subprocess.run(["buildah", "commit", "--quiet", container, ref], check=True)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    paths = node.NodePaths(cluster.devenv.layout)
    images.load(ref, paths.containerd_socket, paths.sub("image-stamps"))
    return ref


def test_a_root_image_is_refused_by_run_as_non_root(cluster, minio):
    """An image that runs as root: the loader Pod's runAsNonRoot must stop it before it
    starts, and the import must say so."""
    ns = cluster.namespace("node")
    with services.operator_with(cluster.devenv, PRODUCTIMPORT_OPERATOR_IMAGE=_root_image(cluster)):
        apply(cluster, "asroot", ns, upload(minio, ns, b"sku,name\nA,a\n"))
        status = finished(cluster, "asroot", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PodCannotStart", status
    assert "runAsNonRoot" in status["message"] and "root" in status["message"]
