"""A cancel during the commit, and a second loader beside one that has not ended.

A cancelled import's status used to be written as soon as its Job was deleted, and the
catalog's next import started at once, while the loader ran on: the kubelet gives a
deleted Pod its grace period (30 s), and the loader, PID 1 of its container with no
SIGTERM handler, ignores SIGTERM until the SIGKILL, so it could commit an import already
reported as cancelled. A new Job was likewise created while a loader of the catalog
still ran (a Pod terminating, or left running by `kubectl delete job --cascade=orphan`).

Now a cancelled import stays Running (reason Cancelling) until no Pod of its Job is
alive, then the catalog's history decides; and no Job is created while a loader Pod of
its catalog is alive. The decisions run in memory (test_decisions.World, with the
deletion as the API server and the kubelet do it); the end-to-end tests run the
reconciler of this checkout against the real cluster (live_reconciler.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from imports_support import products_csv, upload
from live_reconciler import LiveOperator, frozen_loader
from memory_kube import MemoryKube, stamp
from test_decisions import NS, TWO_ROWS, World, _condition
from test_real_node import _step_until

from devenv.waiting import wait_for
from productimport.engine.catalog import Catalog
from productimport.engine.errors import TemporaryFailure


class GracefulKube(MemoryKube):
    """A MemoryKube that deletes a running Job the way the cluster does (measured on the
    dev cluster: a Python PID 1 ran on for the whole 30 s grace period): a foreground
    deletion marks the Job and its Pods with a deletionTimestamp, the Pods stay (still
    Running) until the kubelet has stopped them (`stopped`), and the Job goes with its
    last Pod. `orphan` is `kubectl delete job --cascade=orphan`."""

    def delete_job(self, namespace: str, name: str) -> None:
        job = self.jobs.get((namespace, name))
        if job is None:
            return
        now = stamp(datetime.now(UTC))
        self.deleted_jobs.append((namespace, name))
        job["metadata"].update(deletionTimestamp=now, finalizers=["foregroundDeletion"])
        pods = [pod for pod in self.pods.values() if self._pod_of(pod, namespace, name)]
        for pod in pods:
            pod["metadata"].setdefault("deletionTimestamp", now)
        if not pods:
            del self.jobs[(namespace, name)]

    def stopped(self, namespace: str, job: str) -> None:
        """The kubelet has stopped the Job's Pods: they are gone, and so is the Job if it
        was being deleted."""
        for key in [k for k, pod in self.pods.items() if self._pod_of(pod, namespace, job)]:
            del self.pods[key]
        if (self.jobs.get((namespace, job)) or {}).get("metadata", {}).get("deletionTimestamp"):
            del self.jobs[(namespace, job)]

    def orphan(self, namespace: str, job: str) -> None:
        del self.jobs[(namespace, job)]

    def end_pods(self, namespace: str, job: str, phase: str) -> None:
        """The loader exited by itself (its Pod Succeeded or Failed)."""
        for pod in self.pods.values():
            if self._pod_of(pod, namespace, job):
                pod["status"]["phase"] = phase


@pytest.fixture(params=["watch", "list"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> World:
    return World(tmp_path / "store", request.param, kube=GracefulKube())


def with_next(world: World, name: str) -> str:
    """`name` has a Job; 'next' waits behind it in the same catalog. Returns the Job."""
    world.apply(name)
    world.apply("next")
    world.reconcile(name)
    world.reconcile("next")
    return world.job(name)


def _running_with_next(world: World) -> str:
    """'running' has a loader Pod; 'next' waits for it in the same catalog."""
    job = with_next(world, "running")
    world.kube.run(NS, job)
    world.reconcile("running")
    return job


def _cancelling(world: World, job: str) -> None:
    """The cancel has deleted the Job, but its loader still runs: nothing is final yet,
    and the catalog's next import does not start."""
    world.cancel("running")
    world.reconcile("running")
    status = world.status("running")
    assert status["phase"] == "Running" and status["reason"] == "Cancelling", status
    assert _condition(status, "Reconciling")["status"] == "True"
    assert "(terminating)" in status["message"] and job in status["message"]
    assert world.kube.deleted_jobs == [(NS, job)]
    world.reconcile("running")  # a second pass deletes nothing more, decides nothing
    assert world.kube.deleted_jobs == [(NS, job)]
    assert world.kube.reasons(NS, "running").count("Cancelling") == 1
    world.reconcile("next")
    assert world.status("next")["phase"] == "Queued" and world.kube.job_of(NS, "next") is None


def test_a_cancel_during_the_commit_ends_succeeded_once_the_loader_is_gone(world):
    """Scenario 4: the loader commits after the cancel (during its grace period). The
    import is not reported cancelled while it runs, and ends as the catalog says."""
    job = _running_with_next(world)
    world.write_progress("running", "committing", 2)
    _cancelling(world, job)
    world.commit("running", TWO_ROWS)  # the loader, still running, commits
    world.reconcile("running")
    assert world.status("running")["reason"] == "Cancelling"
    world.kube.stopped(NS, job)
    world.reconcile("running")

    status = world.status("running")
    assert status["phase"] == "Succeeded" and status["reason"] == "CommittedBeforeCancel", status
    assert "the cancel came too late" in status["message"]
    assert status["catalogVersion"] == 1 and status["counts"]["created"] == 2
    for type_ in ("Ready", "Succeeded"):
        assert _condition(status, type_)["reason"] == "CommittedBeforeCancel"
    assert Catalog(world.store.inner, NS, "main").find_import(
        world.kube.imports[(NS, "running")]["metadata"]["uid"]
    )
    assert world.kube.reasons(NS, "running")[-1] == "ImportSucceeded"
    # Only now the catalog is free, and the next import starts in the same pass.
    assert world.status("next")["phase"] == "Running" and world.kube.job_of(NS, "next")


def test_a_cancel_before_the_commit_ends_cancelled_once_the_loader_is_gone(world):
    job = _running_with_next(world)
    _cancelling(world, job)
    world.kube.stopped(NS, job)  # SIGKILLed before it committed
    world.reconcile("running")
    status = world.status("running")
    assert status["phase"] == "Failed" and status["reason"] == "Cancelled", status
    assert "Job deleted" in status["message"] and "without committing" in status["message"]
    assert (NS, job) not in world.kube.secrets
    assert world.status("next")["phase"] == "Running" and world.kube.job_of(NS, "next")


def test_a_cancelled_import_waits_for_the_store_before_it_is_final(world):
    """Once the loader is gone only the catalog can say whether it committed: no final
    status while MinIO does not answer, however long."""
    job = _running_with_next(world)
    _cancelling(world, job)
    world.commit("running", TWO_ROWS)
    world.kube.stopped(NS, job)
    world.minio(up=False)
    for step in (0, 61, 3600):  # past store_retry_seconds (60)
        world.clock.now += step
        with pytest.raises(TemporaryFailure):
            world.reconcile("running")
        status = world.status("running")
        assert status["phase"] == "Running" and status["reason"] == "Cancelling", status
        assert "waiting for the store" in status["message"]
    world.minio(up=True)
    world.reconcile("running")
    assert world.status("running")["reason"] == "CommittedBeforeCancel"


def test_an_orphaned_loader_keeps_a_new_job_of_its_catalog_waiting(world):
    """`kubectl delete job --cascade=orphan` while the loader runs: the import's Job used
    to be created again at once, beside the loader that still ran."""
    job = _running_with_next(world)
    (pod,) = world.kube.job_pods(NS, job)
    world.kube.orphan(NS, job)
    with pytest.raises(TemporaryFailure):  # tried again at kopf's next retry
        world.reconcile("running")
    status = world.status("running")
    assert status["phase"] == "Queued" and status["reason"] == "WaitingForLoader", status
    assert f"{pod['metadata']['name']} (running)" in status["message"]
    assert world.kube.get_job(NS, job) is None
    assert world.kube.reasons(NS, "running").count("WaitingForLoader") == 1

    world.kube.end_pods(NS, job, "Failed")  # the orphan ended without a result
    world.reconcile("running")
    assert world.kube.get_job(NS, job) is not None
    assert world.status("running")["reason"] == "JobCreated"
    assert world.kube.job_of(NS, "next") is None


# -- end to end: the real Job controller, kubelet and loader -----------------------------


@pytest.mark.cluster
def test_a_cancel_during_a_real_commit_follows_the_catalog(cluster, minio):
    """A real loader frozen at its commit stage is cancelled: its Pod is terminating and
    the import stays Cancelling; thawed, it commits within its grace period (it ignores
    SIGTERM), and the import ends Succeeded, CommittedBeforeCancel, as the catalog holds
    it. The catalog's next import starts only after the loader Pod is gone."""
    ns = cluster.namespace("cancel")
    live = LiveOperator(cluster, ns)
    first = live.apply("first", upload(minio, ns, products_csv(200_000)))
    second = live.apply("second", upload(minio, ns, b"sku,name\nA,a\n"))
    live.reconcile_until("the first Job", lambda: live.job_of(first))
    with frozen_loader(cluster, ns) as loader:
        _step_until(loader, lambda: live.progress_stage(first) == "committing")
        live.cancel(first)
        live.reconcile(first)
        status = live.status(first)
        assert status["phase"] == "Running" and status["reason"] == "Cancelling", status
        # The garbage collector deletes the Pod of the Job being deleted (foreground).
        wait_for(
            "the loader Pod to be terminating",
            lambda: live.loader_pod(first)["metadata"].get("deletionTimestamp"),
        )
        live.reconcile(first)
        status = live.status(first)
        assert status["reason"] == "Cancelling" and "(terminating)" in status["message"]
        live.reconcile(second)
        assert live.status(second)["phase"] == "Queued" and not live.job_of(second)
    # Thawed: the loader finishes its commit, exits, and its Pod goes.

    def decided() -> dict | None:
        live.reconcile(first)
        status = live.status(first)
        if status.get("phase") not in ("Succeeded", "Failed"):
            assert live.loader_pod(first) is not None, status  # no decision without it
            return None
        return status

    status = wait_for("the cancelled import to be decided", decided)
    uid = live.uid(first)
    committed = Catalog(live.reconciler.reports.store, ns, "main").find_import(uid)
    # The loader stops at the SIGTERM between two steps, unless its commit is under way:
    # either way the status is what the catalog's history says.
    if committed is not None:
        assert status["phase"] == "Succeeded" and status["reason"] == "CommittedBeforeCancel"
        assert status["catalogVersion"] == committed.version
    else:
        assert status["phase"] == "Failed" and status["reason"] == "Cancelled", status
    # Decided once the loader had exited (its Pod may linger, terminal, while the kubelet
    # finishes deleting it).
    pod = live.loader_pod(first)
    assert pod is None or pod["status"]["phase"] in ("Succeeded", "Failed"), pod
    # The next import got the catalog as the first ended.
    assert live.job_of(second), live.status(second)
