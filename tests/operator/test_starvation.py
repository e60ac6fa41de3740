"""No starvation: an import that cannot get a loader running ends, and its catalog's
queue moves on.

A loader Pod the scheduler could not place, a Job whose Pods a quota refused, or a Job
the API server refused to create used to hold the import Running (or raise on every
pass, with no status) until the Job's deadline or forever, and every later import of
the catalog waited behind it without a word. Now: an unschedulable Pod fails the import
(Unschedulable, quoting the Pod's condition) after `pending_timeout_seconds`, a Job with
no Pod as long fails it (PodNotCreated), and a refused Job is created again with
back-off, the status saying why, until `job_create_retry_seconds` (then JobCreateFailed).
Every Job has a deadline (test_jobs.py). Decisions in memory, then on the real cluster
with the reconciler of this checkout (live_reconciler.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from imports_support import upload
from live_reconciler import LiveOperator
from memory_kube import MemoryKube, stamp
from test_cancel_commit import with_next
from test_decisions import NS, Clock, World, _condition

from devenv.waiting import wait_for
from productimport.engine.errors import TemporaryFailure
from productimport.operator.kube import JobRefused

QUOTA_MESSAGE = (
    'jobs.batch "first-import-0a1b2c3d" is forbidden: exceeded quota: jobs, requested: '
    "count/jobs.batch=1, used: count/jobs.batch=0, limited: count/jobs.batch=0"
)
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/1 nodes are available: 1 Insufficient cpu.",
}


class RefusingKube(MemoryKube):
    """A MemoryKube whose API server refuses Jobs while `refusal` is set (a quota)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusal: JobRefused | None = None
        self.create_calls = 0

    def create_job(self, body: dict[str, Any]) -> bool:
        self.create_calls += 1
        if self.refusal is not None:
            raise self.refusal
        return super().create_job(body)


@pytest.fixture(params=["watch", "list"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> World:
    return World(tmp_path / "store", request.param, kube=RefusingKube())


def _the_queue_moved_on(world: World, job: str) -> None:
    assert world.kube.get_job(NS, job) is None  # nothing left trying
    assert world.status("next")["phase"] == "Running" and world.kube.job_of(NS, "next")


# -- a loader Pod that never runs ---------------------------------------------------------


def test_an_unschedulable_loader_fails_after_the_pending_timeout(world):
    job = with_next(world, "stuck")
    world.kube.add_pod(NS, job, status={"conditions": [UNSCHEDULABLE]}, age=timedelta(seconds=30))
    world.reconcile("stuck")  # 30 s: the scheduler may yet place it
    assert world.status("stuck")["phase"] == "Running"

    world.settings.pending_timeout_seconds = 20
    world.reconcile("stuck")
    status = world.status("stuck")
    assert status["phase"] == "Failed" and status["reason"] == "Unschedulable", status
    assert "could not be scheduled in 3" in status["message"]  # 30 s or 31 (whole seconds)
    assert "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in status["message"]
    assert _condition(status, "Stalled")["reason"] == "Unschedulable"
    _the_queue_moved_on(world, job)


def test_a_job_that_makes_no_pod_fails_after_the_pending_timeout(world):
    """A ResourceQuota on Pods: the Job exists, the Job controller's Pods are refused."""
    job = with_next(world, "stuck")
    world.reconcile("stuck")
    assert world.status("stuck")["phase"] == "Running"
    created = datetime.now(UTC) - timedelta(seconds=700)
    world.kube.jobs[(NS, job)]["metadata"]["creationTimestamp"] = stamp(created)
    world.reconcile("stuck")  # past the default pending_timeout_seconds (600)
    status = world.status("stuck")
    assert status["phase"] == "Failed" and status["reason"] == "PodNotCreated", status
    assert f"kubectl describe job {job} -n {NS}" in status["message"]
    _the_queue_moved_on(world, job)


# -- a Job the API server refuses ---------------------------------------------------------


def _attempt(world: World, name: str, number: int, next_in: int) -> None:
    with pytest.raises(TemporaryFailure):  # kopf tries the pass again
        world.reconcile(name)
    status = world.status(name)
    assert status["phase"] == "Queued" and status["reason"] == "JobNotCreated", status
    assert "exceeded quota: jobs" in status["message"] and "(HTTP 403)" in status["message"]
    assert f"(attempt {number}, next in {next_in}s)" in status["message"]


def test_a_refused_job_is_created_again_with_back_off_then_fails_and_the_queue_moves_on(
    world,
):
    world.kube.refusal = JobRefused(403, QUOTA_MESSAGE)
    world.apply("first")
    world.apply("next")
    _attempt(world, "first", 1, 5)
    assert world.kube.reasons(NS, "first") == ["JobNotCreated"]
    # Passes within the back-off make no attempt (and mint no credentials).
    asked = len(world.credentials.asked)
    world.clock.now += 4
    with pytest.raises(TemporaryFailure):
        world.reconcile("first")
    assert world.kube.create_calls == 1 and len(world.credentials.asked) == asked
    for number, step, next_in in ((2, 1, 10), (3, 10, 20), (4, 20, 40), (5, 40, 60)):
        world.clock.now += step
        _attempt(world, "first", number, next_in)  # doubled, up to the cap (60 s)
    world.reconcile("next")
    assert world.status("next")["reason"] == "Queued"

    world.clock.now += 600  # job_create_retry_seconds since the first refusal
    world.reconcile("first")
    status = world.status("first")
    assert status["phase"] == "Failed" and status["reason"] == "JobCreateFailed", status
    assert "in 6 attempts over" in status["message"] and QUOTA_MESSAGE in status["message"]
    assert world.kube.job_of(NS, "first") is None
    # The catalog moved on: the next import tried at once, and runs once it is allowed.
    assert world.status("next")["reason"] == "JobNotCreated"
    world.kube.refusal = None
    world.clock.now += 5
    world.reconcile("next")
    assert world.status("next")["phase"] == "Running" and world.kube.job_of(NS, "next")


def test_a_job_refused_for_a_while_starts_when_it_is_allowed(world):
    world.kube.refusal = JobRefused(403, QUOTA_MESSAGE)
    world.apply("first")
    _attempt(world, "first", 1, 5)
    world.kube.refusal = None
    world.clock.now += 5
    world.reconcile("first")
    status = world.status("first")
    assert status["phase"] == "Running" and status["reason"] == "JobCreated", status


def test_a_refused_import_can_be_cancelled(world):
    world.kube.refusal = JobRefused(403, QUOTA_MESSAGE)
    world.apply("first")
    world.apply("next")
    _attempt(world, "first", 1, 5)
    world.cancel("first")
    world.reconcile("first")
    status = world.status("first")
    assert status["phase"] == "Failed" and status["reason"] == "Cancelled", status
    assert "before its Job was created" in status["message"] and "jobName" not in status
    assert world.status("next")["reason"] == "JobNotCreated"  # its turn came


# -- end to end ----------------------------------------------------------------------------

TINY = b"sku,name\nA,a\n"


@pytest.mark.cluster
def test_a_loader_no_node_can_run_fails_unschedulable_and_the_next_import_runs(cluster, minio):
    """A Job asking for more CPU than the node has: the real scheduler's words end the
    import (pending timeout 0 s: at once), and the catalog's next import runs."""
    ns = cluster.namespace("pending")
    live = LiveOperator(cluster, ns, pending_timeout_seconds=0)
    big = live.apply("big", upload(minio, ns, TINY), job={"resources": {"requests": {"cpu": "64"}}})
    after = live.apply("after", upload(minio, ns, TINY))
    # Passes until the Job exists, then none until its Pod does (with a timeout of 0 s, a
    # pass in between would find a Job with no Pod yet: PodNotCreated).
    live.reconcile_until("the Job", lambda: live.job_of(big), big)
    wait_for("the loader Pod", lambda: live.loader_pod(big))

    def ended() -> dict | None:
        status = live.status(big)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = live.reconcile_until("the unschedulable import to fail", ended, big)
    assert status["phase"] == "Failed" and status["reason"] == "Unschedulable", status
    assert "Insufficient cpu" in status["message"], status
    wait_for("its Job to be deleted", lambda: live.job_of(big) is None)
    final = live.reconcile_until(
        "the next import to finish", lambda: live.status(after).get("phase") == "Succeeded"
    )
    assert final, live.status(after)


def _quota(cluster, ns: str, hard: dict[str, str]) -> None:
    """A ResourceQuota the API server's quota admission enforces. The dev cluster runs no
    resourcequota controller, and admission enforces only what a quota's status says, so
    the status is written here as the controller would write it for an empty namespace."""
    cluster.kubectl(
        "create", "resourcequota", "limits", "-n", ns,
        "--hard=" + ",".join(f"{k}={v}" for k, v in hard.items()),
    )  # fmt: skip
    used = {k: "0" for k in hard}
    patch = {"status": {"hard": hard, "used": used}}
    cluster.kubectl(
        "patch", "resourcequota", "limits", "-n", ns, "--subresource=status",
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip


@pytest.mark.cluster
def test_a_quota_that_refuses_jobs_fails_the_import_then_the_next_runs_when_lifted(cluster, minio):
    """count/jobs.batch: 0. The first import retries with back-off and then fails
    JobCreateFailed with the API server's words; the next import of the catalog takes its
    turn at once, and runs as soon as the quota is lifted. The back-off runs on a clock
    the test turns."""
    ns = cluster.namespace("quota")
    _quota(cluster, ns, {"count/jobs.batch": "0"})
    clock = Clock()
    live = LiveOperator(cluster, ns, clock=clock)
    first = live.apply("first", upload(minio, ns, TINY))
    second = live.apply("second", upload(minio, ns, TINY))
    for number, next_in in ((1, 5), (2, 10)):
        live.reconcile(first)
        status = live.status(first)
        assert status["reason"] == "JobNotCreated", status
        assert "exceeded quota: limits" in status["message"], status
        assert f"(attempt {number}, next in {next_in}s)" in status["message"]
        clock.now += next_in
    live.reconcile(second)
    assert live.status(second)["reason"] == "Queued"
    clock.now += live.settings.job_create_retry_seconds
    live.reconcile(first)
    status = live.status(first)
    assert status["phase"] == "Failed" and status["reason"] == "JobCreateFailed", status
    assert "forbidden: exceeded quota" in status["message"]
    assert live.status(second)["reason"] == "JobNotCreated"  # its turn came at once

    cluster.kubectl("delete", "resourcequota", "limits", "-n", ns)
    probe = ("create", "job", "probe", "--image=x", "-n", ns, "--dry-run=server")
    wait_for("the quota to be lifted", lambda: cluster.kubectl(*probe, check=False).returncode == 0)
    clock.now += 60

    def succeeded() -> bool:
        return live.status(second).get("phase") == "Succeeded"

    assert live.reconcile_until("the next import to run", succeeded, second)
    assert live.job_of(first) is None


@pytest.mark.cluster
def test_a_job_whose_pods_a_quota_refuses_fails_pod_not_created(cluster, minio):
    ns = cluster.namespace("podquota")
    _quota(cluster, ns, {"pods": "0"})
    live = LiveOperator(cluster, ns, pending_timeout_seconds=5)
    stuck = live.apply("stuck", upload(minio, ns, TINY))

    def ended() -> dict | None:
        status = live.status(stuck)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = live.reconcile_until("the import to fail", ended, stuck)
    assert status["phase"] == "Failed" and status["reason"] == "PodNotCreated", status
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert "exceeded quota" in events  # what `kubectl describe job` shows, as it says
    wait_for("its Job to be deleted", lambda: live.job_of(stuck) is None)
