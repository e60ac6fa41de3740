"""The operator end to end on the local control plane: kubectl apply -> Job -> status.

Real kube-apiserver, real Job controller, real MinIO; the loader runs in a container of
the image built from this checkout, on the dev cluster's real kubelet. Waits are bounded
(a stuck import fails the test) but never asserted on: these machines are shared.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import time

import pytest
from imports_support import (
    MAGENTO,
    apply,
    events_of,
    exists,
    finished,
    get,
    jobs_of,
    phase,
    products_csv,
    running_loader,
    upload,
)

from devenv.component import DevEnvError
from devenv.node import freeze
from devenv.pki import Pki
from devenv.services import CATALOG_BUCKET
from devenv.waiting import wait_for
from tests.receivers import https_receiver
from tests.receivers import status as answer_with

pytestmark = pytest.mark.cluster


def test_a_real_file_imports_and_kubectl_get_shows_the_counts(cluster, minio):
    ns = cluster.namespace("op")
    apply(cluster, "magento", ns, upload(minio, ns, MAGENTO))
    obj = finished(cluster, "magento", ns)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["counts"] == {
        "rows": 1994, "created": 1994, "updated": 0, "unchanged": 0, "deleted": 0, "rejected": 0
    }  # fmt: skip
    assert status["catalogVersion"] == 1
    assert status["attempts"] == 1
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "ImportSucceeded"
    table = cluster.kubectl("get", "productimports", "-n", ns).stdout.splitlines()
    assert table[1].split()[:7] == ["magento", "main", "Succeeded", "1994", "1994", "0", "0"]
    reasons = events_of(cluster, "magento", ns)
    assert "JobCreated" in reasons and "ImportSucceeded" in reasons
    job = jobs_of(cluster, ns)[0]
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    # Re-applying the same manifest is a no-op: no second Job, same catalog version.
    apply(cluster, "magento", ns, obj["spec"]["source"]["object"])
    time.sleep(5)
    assert len(jobs_of(cluster, ns)) == 1
    assert get(cluster, "pi", "magento", ns)["status"]["catalogVersion"] == 1


def test_an_invalid_file_fails_with_a_reason_and_an_error_report(cluster, minio):
    ns = cluster.namespace("op")
    rows = ["sku,name,price,currency"] + [f"S{i},Name {i},-{i}.50,EUR" for i in range(1, 40)]
    apply(cluster, "negative", ns, upload(minio, ns, ("\n".join(rows) + "\n").encode()))
    status = finished(cluster, "negative", ns)["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "ErrorPolicyExceeded", status
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ErrorPolicyExceeded"
    assert status["errors"][0]["code"] == "negative_price"
    assert status["errors"][0]["line"] == 2
    bucket, _, key = status["errorsRef"].removeprefix("s3://").partition("/")
    report = minio.get_object(bucket, key).read().decode()
    assert len(report.strip().splitlines()) == 1 + 39  # header + one record per bad row
    assert "ImportFailed" in events_of(cluster, "negative", ns)
    # Bad data is not retried: one pod, the Job failed by its podFailurePolicy.
    job = jobs_of(cluster, ns)[0]
    assert (job["status"].get("failed") or 0) == 1


def test_a_missing_source_object_fails_at_once(cluster, minio):
    ns = cluster.namespace("op")
    apply(cluster, "ghost", ns, {"bucket": "uploads", "key": f"{ns}/does-not-exist.csv"})
    status = finished(cluster, "ghost", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "SourceNotFound", status
    assert "does-not-exist.csv" in status["message"]


def test_imports_into_one_catalog_run_one_after_the_other(cluster, minio):
    ns = cluster.namespace("op")
    source = upload(minio, ns, MAGENTO)
    names = ["first", "second", "third"]
    # Applied while the operator is down, so all three wait at once when it starts: the
    # queue, not the speed of a 2-second import, decides the order.
    _kill_operator(cluster)
    try:
        for name in names:
            apply(cluster, name, ns, source, mode="upsert")
            time.sleep(1.1)  # distinct creation seconds: the queue order is creation order
    finally:
        _start_operator(cluster)
    results = [finished(cluster, name, ns)["status"] for name in names]
    assert [s["phase"] for s in results] == ["Succeeded"] * 3, results
    # Each ran against the catalog the previous one left: 1994 created, then unchanged
    # (an import that changes nothing commits no new version).
    assert results[0]["counts"]["created"] == 1994
    assert results[1]["counts"]["unchanged"] == 1994 and results[2]["counts"]["unchanged"] == 1994
    assert [s["catalogVersion"] for s in results] == [1, 1, 1]
    spans = sorted((s["startTime"], s["completionTime"]) for s in results)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"two imports of one catalog overlapped: {spans}"
    assert [s["startTime"] for s in results] == sorted(s["startTime"] for s in results)
    assert "Queued" in events_of(cluster, "second", ns)
    assert "Queued" in events_of(cluster, "third", ns)


def _kill_operator(cluster) -> None:
    assert cluster.devenv.sup.stop("operator", grace=0, sig=signal.SIGKILL)


def _start_operator(cluster) -> None:
    cluster.devenv.up()


def test_operator_killed_before_the_jobexists(cluster, minio):
    ns = cluster.namespace("op")
    _kill_operator(cluster)
    try:
        apply(cluster, "early", ns, upload(minio, ns, MAGENTO))
        time.sleep(2)
        assert jobs_of(cluster, ns) == []
    finally:
        _start_operator(cluster)
    status = finished(cluster, "early", ns)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["created"] == 1994
    assert len(jobs_of(cluster, ns)) == 1


def test_operator_killed_while_the_job_runs(cluster, minio):
    ns = cluster.namespace("op")
    apply(cluster, "midway", ns, upload(minio, ns, MAGENTO))
    wait_for("the Job", lambda: jobs_of(cluster, ns))
    _kill_operator(cluster)
    _start_operator(cluster)
    status = finished(cluster, "midway", ns)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["created"] == 1994
    assert len(jobs_of(cluster, ns)) == 1


def test_operator_killed_after_the_job_finished_before_the_status(cluster, minio):
    ns = cluster.namespace("op")
    apply(cluster, "late", ns, upload(minio, ns, MAGENTO))
    wait_for("the Job", lambda: jobs_of(cluster, ns))
    _kill_operator(cluster)
    try:

        def complete():
            conds = (jobs_of(cluster, ns)[0].get("status") or {}).get("conditions") or []
            return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

        wait_for("the Job to complete without the operator", complete)
        assert phase(cluster, "late", ns) in (None, "Running")
    finally:
        _start_operator(cluster)
    status = finished(cluster, "late", ns)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["created"] == 1994
    assert status["catalogVersion"] == 1
    assert len(jobs_of(cluster, ns)) == 1


def test_progress_is_visible_while_running_and_the_webhook_hears_the_outcome(cluster, minio):
    ns = cluster.namespace("op")
    layout = cluster.devenv.layout
    pki = Pki(layout.sub("pki"))
    source = upload(minio, ns, products_csv(300_000))
    loader: str | None = None
    stack = contextlib.ExitStack()
    try:
        # An HTTPS receiver at the one private address the dev egress policy allows.
        hook = stack.enter_context(
            https_receiver(
                layout.network.host_ip, layout.ports.test_receivers[0],
                pki.cert("test-receiver"), pki.key("test-receiver"), {"/hook": answer_with(204)},
            )
        )  # fmt: skip
        apply(cluster, "big", ns, source, notify={"webhook": hook.url("/hook")})
        # The loader can finish between two operator passes, so racing it proves nothing.
        # Pause it instead (the cgroup freezer, as `docker pause` does) and let it run in
        # short steps until it has published progress; the operator must then show that
        # progress while the Job is still running.
        loader = wait_for("the loader container", lambda: running_loader(cluster, ns))
        freeze(loader, True)
        uid = get(cluster, "pi", "big", ns)["metadata"]["uid"]
        progress_key = f"{ns}/main/imports/{uid}/progress.json"  # docs/loader-contract.md

        def published() -> bool:
            freeze(loader, False)
            time.sleep(0.1)
            freeze(loader, True)
            return exists(minio, CATALOG_BUCKET, progress_key)

        wait_for("the loader to publish progress", published)

        def progressing():
            status = (get(cluster, "pi", "big", ns) or {}).get("status") or {}
            progress = status.get("progress") or {}
            return status if status.get("phase") == "Running" and progress.get("stage") else None

        running = wait_for("progress in the status", progressing)
        # Any stage before "done": a step of the paused loader may carry it past several.
        # (Seen once in CI: stage "done" while Running. The Job's story says how, next time.)
        assert running["progress"]["stage"] in ("reading", "validating", "merging", "committing"), (
            running,
            [j.get("status") for j in jobs_of(cluster, ns)],
            events_of(cluster, "big", ns),
        )
        assert running["message"].startswith(running["progress"]["stage"])
        freeze(loader, False)
        status = finished(cluster, "big", ns)["status"]
        assert status["phase"] == "Succeeded" and status["counts"]["created"] == 300_000
        wait_for("the webhook", lambda: hook.seen, timeout=30)
        received = json.loads(hook.seen[0].body)
        assert received["name"] == "big" and received["phase"] == "Succeeded"
        assert received["counts"]["created"] == 300_000
    finally:
        if loader is not None:
            with contextlib.suppress(OSError, DevEnvError):
                freeze(loader, False)
        stack.close()


def test_an_import_waits_for_minio_to_get_its_credentials_then_runs(cluster, minio):
    """No Job starts without its own credentials, which MinIO issues: while MinIO is down
    the import says it waits for the store, and it runs once MinIO is back."""
    ns = cluster.namespace("op")
    source = upload(minio, ns, MAGENTO)
    cluster.devenv.sup.stop("minio")
    try:
        apply(cluster, "nostore", ns, source)

        def waiting():
            status = (get(cluster, "pi", "nostore", ns) or {}).get("status") or {}
            return status if status.get("reason") == "WaitingForStore" else None

        status = wait_for("the import to wait for the store", waiting)
        assert status["phase"] == "Queued" and "MinIO" in status["message"], status
        assert jobs_of(cluster, ns) == []
    finally:
        cluster.devenv.up()  # MinIO back
    status = finished(cluster, "nostore", ns)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["created"] == 1994, status


def test_minio_lost_while_the_loader_runs_is_retried_then_fails_with_a_reason(cluster, minio):
    ns = cluster.namespace("op")
    # Large enough (seconds of work) that the loader is caught while it runs.
    source = upload(minio, ns, products_csv(300_000))
    apply(cluster, "lost", ns, source, job={"activeDeadlineSeconds": 600})
    loader = wait_for("the loader container", lambda: running_loader(cluster, ns))
    freeze(loader, True)  # before it has written anything: MinIO goes first
    cluster.devenv.sup.stop("minio")
    try:
        freeze(loader, False)

        def retried():
            jobs = jobs_of(cluster, ns)
            return jobs and (jobs[0].get("status") or {}).get("failed", 0) >= 2

        wait_for("the loader to be retried", retried)
    finally:
        with contextlib.suppress(OSError, DevEnvError):
            freeze(loader, False)
        cluster.devenv.up()  # MinIO back
    status = finished(cluster, "lost", ns)["status"]
    # Either the retries outlasted the outage, or the import recovered on a later attempt
    # (its credentials outlive a MinIO restart): both are right; what must never happen
    # is a failure without a reason.
    if status["phase"] == "Failed":
        assert status["reason"] in ("StoreUnavailable", "BackoffLimitExceeded"), status
        assert "MinIO" in status["message"] or "temporary" in status["message"], status
    else:
        assert status["counts"]["created"] == 300_000


def test_an_import_out_of_memory_fails_at_once_with_advice(cluster, minio):
    ns = cluster.namespace("op")
    apply(cluster, "tight", ns, upload(minio, ns, MAGENTO), job={"memoryLimit": "20MB"})
    status = finished(cluster, "tight", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "OutOfMemory", status
    assert "spec.job.memoryLimit" in status["message"]
    assert status["attempts"] == 1  # podFailurePolicy: the same limit would fail the same way
