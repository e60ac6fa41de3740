"""The reconciler's decision table, one test per row, in memory (milliseconds each).

The real Reconciler runs against the seams it is built on: the API server is a
MemoryKube (memory_kube.py), the store the loaders write to is the engine's real
LocalObjectStore in a temporary directory (behind a switch that takes it down), the
loader's STS credentials are fixed ones, webhook deliveries are recorded instead of sent,
and the clock that times a store outage is turned by hand. What the cluster itself does
(the Job controller, the kubelet, MinIO's STS, a real loader) is in test_operator_e2e.py
and test_real_node.py; these tests assert the same behaviour, decision by decision.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from memory_kube import MemoryKube

from productimport.engine.catalog import Catalog
from productimport.engine.errors import TemporaryFailure
from productimport.engine.objectstore import LocalObjectStore
from productimport.engine.options import ImportOptions
from productimport.engine.progress import ProgressReporter
from productimport.engine.runner import run_import
from productimport.models.product import ErrorRecord, ImportCounts, ImportResult
from productimport.models.resource import ANNOTATION_CANCEL
from productimport.operator.jobs import build_job, job_name
from productimport.operator.kube import Kube, KubeApi
from productimport.operator.notify import SIGNING_SECRET
from productimport.operator.queue import ANNOTATION_SEQUENCE, ImportQueues
from productimport.operator.reconcile import LEGACY_SHARED_SECRET, Reconciler
from productimport.operator.settings import OperatorSettings
from productimport.operator.store import ImportReports

NS = "shop-a"
FIXED_CREDENTIALS = {
    "MINIO_ENDPOINT": "minio.test:9000",
    "MINIO_SECURE": "false",
    "MINIO_REGION": "us-east-1",
    "MINIO_ACCESS_KEY": "fixed-access-key",
    "MINIO_SECRET_KEY": "fixed-secret-key",
    "MINIO_SESSION_TOKEN": "fixed-session-token",
}


class Outage:
    """The engine's LocalObjectStore, with a switch: `down`, every call raises what the
    MinIO store raises when MinIO does not answer (TemporaryFailure)."""

    def __init__(self, inner: LocalObjectStore) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise TemporaryFailure(f"MinIO unavailable while calling {name}: refused")
            return method(*args, **kwargs)

        return call


class FixedCredentials:
    """The LoaderCredentials seam: fixed keys, and what each Job was to be allowed."""

    def __init__(self) -> None:
        self.down = False
        self.asked: list[tuple[str, str | None]] = []
        self.tables: list[str] = []

    def __call__(self, catalog_objects: str, source: str | None, table: str) -> dict[str, str]:
        if self.down:
            raise TemporaryFailure("MinIO refused or did not answer AssumeRole: refused")
        self.asked.append((catalog_objects, source))
        self.tables.append(table)
        return dict(FIXED_CREDENTIALS)


class RecordedNotifier:
    """In place of the Notifier (which posts from a thread pool): what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def key(self, namespace: str) -> str:
        return f"signing-key-of-{namespace}"

    def submit(self, url: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        self.sent.append((url, obj["metadata"]["name"], status))


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    root: Path
    # "watch": the catalogs' queues kept from the watch stream, as the operator runs;
    # "list": the reconciler on its own, reading the queue with LIST calls.
    queue_source: str = "watch"
    kube: MemoryKube = field(default_factory=MemoryKube)
    credentials: FixedCredentials = field(default_factory=FixedCredentials)
    notifier: RecordedNotifier = field(default_factory=RecordedNotifier)
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.queues = ImportQueues() if self.queue_source == "watch" else None
        if self.queues is not None:
            self.kube.watchers.append(self.queues.observe)
        self.store = Outage(LocalObjectStore(self.root))
        self.settings = OperatorSettings(
            store=str(self.root),
            upload_bucket="uploads",
            result_read_attempts=3,
            store_retry_seconds=60,
            image_pull_grace_seconds=300,
            inline_errors=5,
        )
        self.reconciler = Reconciler(
            self.kube,
            self.settings,
            ImportReports(self.store),
            loader_credentials=self.credentials,
            notifier=self.notifier,
            clock=self.clock,
            queues=self.queues,
        )

    # -- what a user does ----------------------------------------------------------------

    def apply(
        self, name: str, catalog: str = "main", metadata: dict | None = None, **spec: Any
    ) -> dict[str, Any]:
        spec.setdefault("source", {"object": {"bucket": "uploads", "key": f"{NS}/{name}.csv"}})
        return self.kube.apply(NS, name, {"catalog": catalog, **spec}, **(metadata or {}))

    def cancel(self, name: str) -> None:
        self.kube.annotate(NS, name, ANNOTATION_CANCEL, "true")

    # -- the operator --------------------------------------------------------------------

    def reconcile(self, name: str) -> None:
        self.reconciler.reconcile(NS, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.kube.status(NS, name)

    def job(self, name: str) -> str:
        job = self.kube.job_of(NS, name)
        assert job is not None, f"{name} has no Job"
        return job["metadata"]["name"]

    # -- what the loader leaves in the store ----------------------------------------------

    def _catalog(self, name: str) -> tuple[Catalog, str]:
        obj = self.kube.imports[(NS, name)]
        return Catalog(self.store.inner, NS, obj["spec"]["catalog"]), obj["metadata"]["uid"]

    def write_result(self, name: str, **fields: Any) -> ImportResult:
        catalog, uid = self._catalog(name)
        doc = {
            "importId": uid,
            "namespace": NS,
            "catalog": catalog.name,
            "phase": "Succeeded",
            "reason": "ImportSucceeded",
            "message": "1994 rows: 1994 created",
            "counts": ImportCounts(rows=1994, created=1994),
            "catalogVersion": 1,
            "completedAt": datetime.now(UTC),
            **fields,
        }
        result = ImportResult(**doc)
        key = catalog.import_key(uid, "result.json")
        self.store.inner.put(key, result.model_dump_json(indent=2).encode(), "application/json")
        return result

    def write_progress(self, name: str, stage: str, rows: int) -> None:
        catalog, uid = self._catalog(name)
        reporter = ProgressReporter()  # the loader's own writer of progress.json
        reporter.attach(catalog, uid)
        reporter.stage(stage, rows=rows)

    def engine_import(
        self, csv: str, import_id: str, catalog: str = "main", **options: Any
    ) -> ImportResult:
        """A real loader's import (the engine in-process) into the store the operator
        reads: its commit in the catalog's Delta table, its result document."""
        source = self.root.parent / f"{import_id}.csv"
        source.write_text(csv)
        opts = ImportOptions(
            source=str(source), catalog=catalog, namespace=NS, store=str(self.root),
            import_id=import_id, **options,
        )  # fmt: skip
        result, code = run_import(opts, store=self.store.inner)
        assert code == 0 and result.phase == "Succeeded", result
        return result

    def commit(self, name: str, csv: str, **options: Any) -> ImportResult:
        """The import `name`'s loader commits (under the import's uid)."""
        catalog, uid = self._catalog(name)
        return self.engine_import(csv, uid, catalog.name, **options)

    def drop_result(self, name: str) -> None:
        """The loader's result.json is not there (MinIO went after the commit)."""
        catalog, uid = self._catalog(name)
        self.store.inner.delete(catalog.import_key(uid, "result.json"))

    def minio(self, up: bool) -> None:
        """MinIO serves the store and the STS credentials: both go, and come back."""
        self.store.down = self.credentials.down = not up


@pytest.fixture(params=["watch", "list"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> World:
    return World(tmp_path / "store", request.param)


def _terminated(exit_code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# -- the seam ----------------------------------------------------------------------------


def test_the_memory_kube_and_the_real_kube_keep_to_the_seam():
    """Every KubeApi method exists on both, with the same parameters: the decision tests
    exercise what the real operator calls."""
    members = [n for n, v in vars(KubeApi).items() if callable(v) and not n.startswith("_")]
    assert "get_import" in members and "event" in members
    for name in members:
        want = list(inspect.signature(getattr(KubeApi, name)).parameters)
        for impl in (Kube, MemoryKube):
            assert list(inspect.signature(getattr(impl, name)).parameters) == want, (impl, name)


# -- the decision table ------------------------------------------------------------------


def test_a_new_import_gets_its_job_and_its_own_credentials(world):
    world.kube.put_secret(NS, LEGACY_SHARED_SECRET, {"MINIO_ACCESS_KEY": "the-operators-own"})
    obj = world.apply("magento")
    world.reconcile("magento")

    name = world.job("magento")
    assert name == job_name(obj)
    job = world.kube.get_job(NS, name)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == obj["metadata"]["uid"] and owner["controller"] is True
    loader = job["spec"]["template"]["spec"]["containers"][0]
    assert loader["envFrom"] == [{"secretRef": {"name": name}}]
    # Its own credentials, allowed its catalog's objects and its source only, in a Secret
    # named as its Job and owned by the import; the operator's shared keys are gone.
    secret = world.kube.secrets[(NS, name)]
    assert secret["stringData"] == FIXED_CREDENTIALS
    assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert world.credentials.asked == [
        (str(world.root / NS / "main" / "*"), f"s3://uploads/{NS}/magento.csv")
    ]
    assert (NS, LEGACY_SHARED_SECRET) not in world.kube.secrets

    status = world.status("magento")
    assert status["phase"] == "Running" and status["reason"] == "JobCreated"
    assert status["jobName"] == name and status["attempts"] == 0 and status["startTime"]
    assert world.kube.reasons(NS, "magento") == ["JobCreated"]

    # The next passes find the Job: no second Job, no second credentials, no new Event.
    world.reconcile("magento")
    world.reconcile("magento")
    assert len(world.kube.jobs) == 1 and len(world.credentials.asked) == 1
    assert world.kube.reasons(NS, "magento") == ["JobCreated"]


def test_imports_of_one_catalog_queue_oldest_first(world):
    for name in ("first", "second", "third"):
        world.apply(name)
    world.apply("elsewhere", catalog="outlet")
    # Looked at newest first: the queue, not the order of the passes, decides.
    for name in ("third", "second", "first", "elsewhere"):
        world.reconcile(name)

    assert world.kube.job_of(NS, "first") is not None
    assert world.kube.job_of(NS, "elsewhere") is not None  # another catalog runs alongside
    for name, position in (("second", 1), ("third", 2)):
        status = world.status(name)
        assert status["phase"] == "Queued" and status["reason"] == "Queued", status
        assert "waiting for first" in status["message"]
        assert status["queuePosition"] == position
        assert world.kube.job_of(NS, name) is None
        assert world.kube.reasons(NS, name) == ["Queued"]
    # A queued import that is looked at again says nothing new.
    world.reconcile("third")
    assert world.kube.reasons(NS, "third") == ["Queued"]

    # The first one ends: the next in line gets the catalog in the same pass.
    world.kube.complete(NS, world.job("first"))
    world.write_result("first")
    world.reconcile("first")
    assert world.status("first")["phase"] == "Succeeded"
    assert world.kube.job_of(NS, "second") is not None
    assert world.status("second")["phase"] == "Running"
    world.reconcile("third")
    assert world.kube.job_of(NS, "third") is None
    assert "waiting for second" in world.status("third")["message"]
    assert world.status("third")["queuePosition"] == 1
    assert "queuePosition" not in world.status("second")  # it runs: no place in a queue


def test_an_import_with_a_job_holds_its_catalog_even_when_it_is_younger(world):
    """The running import is the one with a Job, not the oldest: an older import that
    turns up while a younger one runs (re-created by a GitOps tool, say) waits for it."""
    world.apply("older")
    younger = world.apply("younger")
    world.kube.create_job(build_job(younger, world.settings))  # an earlier operator's work
    world.reconcile("older")
    assert world.kube.job_of(NS, "older") is None
    status = world.status("older")
    assert status["reason"] == "Queued" and "waiting for younger" in status["message"]
    world.reconcile("younger")
    assert world.status("younger")["phase"] == "Running"


def test_a_cancelled_queued_import_ends_cancelled_without_a_job(world):
    world.apply("running")
    world.apply("queued")
    world.reconcile("running")
    world.reconcile("queued")
    assert world.status("queued")["queuePosition"] == 1
    world.cancel("queued")
    world.reconcile("queued")

    status = world.status("queued")
    assert status["phase"] == "Failed" and status["reason"] == "Cancelled"
    assert "before it started" in status["message"]
    assert "queuePosition" not in status  # `kubectl get` shows no place in a queue
    assert _condition(status, "Stalled")["status"] == "True"
    assert world.kube.job_of(NS, "queued") is None
    assert world.kube.reasons(NS, "queued") == ["Queued", "ImportFailed"]
    assert world.status("running")["phase"] == "Running"  # the other one runs on


def test_a_cancelled_running_import_loses_its_job_and_frees_the_catalog(world):
    world.apply("running")
    world.apply("next")
    world.reconcile("running")
    world.reconcile("next")
    job = world.job("running")
    world.kube.run(NS, job)
    world.reconcile("running")
    world.cancel("running")
    world.reconcile("running")

    assert world.kube.deleted_jobs == [(NS, job)]
    assert world.kube.job_pods(NS, job) == []
    status = world.status("running")
    assert status["phase"] == "Failed" and status["reason"] == "Cancelled"
    assert "Job deleted" in status["message"]
    assert "progress" not in status
    assert (NS, job) not in world.kube.secrets  # its credentials go with it
    reasons = world.kube.reasons(NS, "running")
    assert reasons[0] == "JobCreated" and reasons[-1] == "ImportFailed"
    # The catalog is free: the next import starts in the same pass.
    assert world.status("next")["phase"] == "Running" and world.kube.job_of(NS, "next")


def test_a_completed_job_with_its_result_ends_succeeded_with_the_counts(world):
    world.apply("magento")
    world.reconcile("magento")
    job = world.job("magento")

    world.kube.run(NS, job)
    world.reconcile("magento")
    assert world.status("magento")["reason"] == "JobRunning"
    world.write_progress("magento", "merging", 1994)
    world.reconcile("magento")
    running = world.status("magento")
    assert running["phase"] == "Running" and running["message"] == "merging: 1,994 rows read"
    assert running["progress"]["stage"] == "merging" and running["progress"]["rowsRead"] == 1994
    assert running["attempts"] == 1

    world.kube.complete(NS, job)
    world.write_result("magento")
    world.reconcile("magento")
    status = world.status("magento")
    assert status["phase"] == "Succeeded" and status["reason"] == "ImportSucceeded"
    assert status["counts"] == {
        "rows": 1994, "created": 1994, "updated": 0, "unchanged": 0, "deleted": 0, "rejected": 0
    }  # fmt: skip
    assert status["catalogVersion"] == 1 and status["attempts"] == 1
    assert status["jobName"] == job and status["completionTime"]
    # (A merge patch: the loader's last updatedAt stays beside the final stage.)
    assert status["progress"]["stage"] == "done" and status["progress"]["rowsRead"] == 1994
    ready = _condition(status, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "ImportSucceeded"
    assert not any(c["type"] == "Reconciling" for c in status["conditions"])
    reasons = world.kube.reasons(NS, "magento")
    assert reasons[0] == "JobCreated" and reasons[-1] == "ImportSucceeded"
    assert reasons.count("JobCreated") == 1
    assert (NS, job) not in world.kube.secrets  # the loader is done with its credentials
    # No webhook asked for: nothing sent, no signing key handed out.
    assert world.notifier.sent == [] and (NS, SIGNING_SECRET) not in world.kube.secrets


def test_a_result_in_the_store_without_a_job_ends_the_import_without_a_job(world):
    """The loader finished while no operator watched and the Job is gone (its TTL): the
    result in the store is the truth, and no second Job is started."""
    world.apply("late")
    world.write_result("late", counts=ImportCounts(rows=10, unchanged=10), catalogVersion=4)
    world.reconcile("late")
    status = world.status("late")
    assert status["phase"] == "Succeeded" and status["counts"]["unchanged"] == 10
    assert status["catalogVersion"] == 4
    assert world.kube.jobs == {} and world.credentials.asked == []


def test_a_finished_job_without_a_result_waits_then_fails_result_missing(world):
    world.apply("silent")
    world.reconcile("silent")
    world.kube.complete(NS, world.job("silent"))
    # result_read_attempts is 3: two passes wait for the store to catch up...
    for _ in range(2):
        world.reconcile("silent")
        assert world.status("silent")["phase"] == "Running"
    # ...the third gives up.
    world.reconcile("silent")
    status = world.status("silent")
    assert status["phase"] == "Failed" and status["reason"] == "ResultMissing"
    assert status["attempts"] == 1 and status["jobName"] == world.job("silent")


def test_a_result_that_arrives_while_waiting_is_taken(world):
    world.apply("slow")
    world.reconcile("slow")
    world.kube.complete(NS, world.job("slow"))
    world.reconcile("slow")
    world.reconcile("slow")
    world.write_result("slow")
    world.reconcile("slow")
    assert world.status("slow")["phase"] == "Succeeded"


def test_minio_down_before_the_job_waits_for_the_store_then_runs(world):
    world.apply("nostore")
    world.minio(up=False)
    with pytest.raises(TemporaryFailure):  # kopf retries it (handlers.py)
        world.reconcile("nostore")
    status = world.status("nostore")
    assert status["phase"] == "Queued" and status["reason"] == "WaitingForStore"
    assert "MinIO" in status["message"]
    assert world.kube.jobs == {}  # no Job without its credentials

    world.clock.now += 59  # within store_retry_seconds (60): still waiting
    with pytest.raises(TemporaryFailure):
        world.reconcile("nostore")
    assert world.status("nostore")["reason"] == "WaitingForStore"

    world.minio(up=True)
    world.reconcile("nostore")
    assert world.status("nostore")["phase"] == "Running" and world.job("nostore")


def test_minio_down_for_longer_than_store_retry_seconds_fails_store_unavailable(world):
    world.apply("nostore")
    world.minio(up=False)
    with pytest.raises(TemporaryFailure):
        world.reconcile("nostore")
    world.clock.now += 61
    world.reconcile("nostore")  # no exception: the import has failed for good
    status = world.status("nostore")
    assert status["phase"] == "Failed" and status["reason"] == "StoreUnavailable"
    assert "still failing after 60s" in status["message"]


def test_minio_down_while_running_and_after_the_job_completed_waits_for_the_store(world):
    """Issue 15, scenario 3: a store outage after the Job completed used to fail the
    import as StoreUnavailable after store_retry_seconds, although it had succeeded.
    Only the store can say how an ended Job went: the import waits for it, however long."""
    world.apply("lost")
    world.reconcile("lost")
    job = world.job("lost")
    world.kube.run(NS, job)
    world.minio(up=False)
    # Progress is a courtesy: a running Job stays Running without it.
    world.reconcile("lost")
    assert world.status("lost")["phase"] == "Running"
    # The Job completed, but its result cannot be read: retried, past store_retry_seconds.
    world.kube.complete(NS, job)
    for step in (0, 30, 31, 3600):
        world.clock.now += step
        with pytest.raises(TemporaryFailure):
            world.reconcile("lost")
        status = world.status("lost")
        assert status["phase"] == "Running" and status["reason"] == "WaitingForCatalog", status
        assert f"the Job {job} completed; waiting for the store" in status["message"]
        assert _condition(status, "Reconciling")["status"] == "True"
    world.minio(up=True)
    world.write_result("lost")
    world.reconcile("lost")
    status = world.status("lost")
    assert status["phase"] == "Succeeded" and status["reason"] == "ImportSucceeded"
    assert status["counts"]["created"] == 1994


def test_an_outage_that_ends_resets_the_store_retry_clock(world):
    world.apply("flaky")
    world.minio(up=False)
    with pytest.raises(TemporaryFailure):
        world.reconcile("flaky")
    world.minio(up=True)
    world.reconcile("flaky")
    world.minio(up=False)
    world.clock.now += 3600  # a second outage, an hour after the first began
    world.reconcile("flaky")  # a running Job reads progress only: no failure
    world.kube.complete(NS, world.job("flaky"))
    with pytest.raises(TemporaryFailure):
        world.reconcile("flaky")  # the new outage starts its own clock
    assert world.status("flaky")["phase"] == "Running"


LOADER_SAID = ImportResult(
    importId="x", namespace=NS, catalog="main", phase="Failed",
    reason="SourceUnreachable", message="https://feeds.example.com/p.csv did not answer",
).model_dump_json()  # fmt: skip
EVICTED_TMP = 'Usage of EmptyDir volume "tmp" exceeds the limit "20Gi". '
EVICTED_POD = "Pod ephemeral local storage usage exceeds the total limit of containers 20Gi. "


@pytest.mark.parametrize(
    ("job_reason", "container", "pod_status", "reason", "says"),
    [
        pytest.param(
            "PodFailurePolicy", _terminated(137, "OOMKilled"), {},
            "OutOfMemory", "spec.job.resources.limits.memory", id="oom-killed",
        ),
        pytest.param(
            "PodFailurePolicy", _terminated(137), {"reason": "Evicted", "message": EVICTED_TMP},
            "DiskLimitExceeded", "spec.job.resources.limits.ephemeral-storage",
            id="evicted-for-its-tmp",
        ),
        pytest.param(
            "PodFailurePolicy", _terminated(137), {"reason": "Evicted", "message": EVICTED_POD},
            "DiskLimitExceeded", "the loader was evicted", id="evicted-for-ephemeral-storage",
        ),
        pytest.param(
            "BackoffLimitExceeded", _terminated(75, message="MinIO unavailable while reading"),
            {}, "StoreUnavailable", "a temporary failure outlasted the Job's retries",
            id="exit-75",
        ),
        pytest.param(
            "BackoffLimitExceeded", _terminated(75, message=f"retrying\n{LOADER_SAID}\n"), {},
            "SourceUnreachable", "did not answer (after 4 attempts)", id="the-loader-said-why",
        ),
        pytest.param(
            "BackoffLimitExceeded", _terminated(1, message="Traceback\nKeyError: 'sku'"), {},
            "BackoffLimitExceeded", "last attempt exited with code 1: Traceback KeyError: 'sku'",
            id="anything-else",
        ),
    ],
)  # fmt: skip
def test_a_failed_job_without_a_result_fails_with_the_loaders_reason(
    world, job_reason, container, pod_status, reason, says
):
    world.apply("doomed")
    world.reconcile("doomed")
    job = world.job("doomed")
    world.kube.add_pod(NS, job, container=container, status={"phase": "Failed", **pod_status})
    world.kube.fail(NS, job, reason=job_reason, failed=4 if job_reason != "PodFailurePolicy" else 1)
    world.reconcile("doomed")
    status = world.status("doomed")
    assert status["phase"] == "Failed" and status["reason"] == reason, status
    assert says in status["message"], status["message"]
    assert status["jobName"] == job and status["attempts"] in (1, 4)
    assert world.kube.reasons(NS, "doomed")[-1] == "ImportFailed"


def test_a_failed_job_with_a_failed_result_reports_the_loaders_errors(world):
    world.apply("negative")
    world.reconcile("negative")
    job = world.job("negative")
    errors = [
        ErrorRecord(line=i + 2, column="price", code="negative_price", message="below zero")
        for i in range(39)
    ]
    world.write_result(
        "negative", phase="Failed", reason="ErrorPolicyExceeded", message="39 of 39 rejected",
        counts=ImportCounts(rows=39, rejected=39), catalogVersion=0, errors=errors,
        errorsRef=f"s3://catalog/{NS}/main/imports/x/errors.csv",
    )  # fmt: skip
    world.kube.add_pod(NS, job, container=_terminated(65), status={"phase": "Failed"})
    world.kube.fail(NS, job, reason="PodFailurePolicy", message="exit code 65")
    world.reconcile("negative")
    status = world.status("negative")
    assert status["phase"] == "Failed" and status["reason"] == "ErrorPolicyExceeded"
    assert _condition(status, "Stalled")["reason"] == "ErrorPolicyExceeded"
    assert len(status["errors"]) == 5 and status["errors"][0]["code"] == "negative_price"
    assert status["errors"][0]["line"] == 2 and status["errorsRef"].endswith("errors.csv")
    assert status["counts"]["rejected"] == 39 and status["attempts"] == 1


@pytest.mark.parametrize(
    ("waiting", "age", "reason"),
    [
        pytest.param("ErrImageNeverPull", timedelta(seconds=1), "ImageUnavailable", id="never"),
        pytest.param("InvalidImageName", timedelta(seconds=1), "ImageUnavailable", id="invalid"),
        pytest.param("ImagePullBackOff", timedelta(seconds=301), "ImageUnavailable", id="backoff"),
        pytest.param(
            "CreateContainerConfigError", timedelta(seconds=1), "PodCannotStart", id="root-image"
        ),
        # Scheduled, never started (a volume that does not mount): the pending timeout.
        pytest.param(
            "ContainerCreating", timedelta(seconds=601), "PodNotStarted", id="never-started"
        ),
    ],
)
def test_a_loader_that_cannot_start_fails_the_import_and_loses_its_job(world, waiting, age, reason):
    world.apply("stuck")
    world.reconcile("stuck")
    job = world.job("stuck")
    state = {"waiting": {"reason": waiting, "message": f"the kubelet says {waiting}"}}
    world.kube.add_pod(NS, job, container=state, age=age)
    world.reconcile("stuck")
    status = world.status("stuck")
    assert status["phase"] == "Failed" and status["reason"] == reason, status
    assert f"cannot start: {waiting}: the kubelet says {waiting}" in status["message"]
    assert status["jobName"] == job
    # Deleted before the status was written: no retry can start a loader now.
    assert world.kube.deleted_jobs == [(NS, job)]


def test_a_container_that_is_being_created_is_given_the_pending_timeout(world):
    world.apply("slow")
    world.reconcile("slow")
    state = {"waiting": {"reason": "ContainerCreating"}}
    world.kube.add_pod(NS, world.job("slow"), container=state, age=timedelta(seconds=599))
    world.reconcile("slow")
    assert world.status("slow")["phase"] == "Running"
    assert world.kube.deleted_jobs == []


def test_an_image_pull_back_off_waits_out_its_grace_period(world):
    world.apply("registry")
    world.reconcile("registry")
    state = {"waiting": {"reason": "ImagePullBackOff", "message": "registry down"}}
    world.kube.add_pod(NS, world.job("registry"), container=state, age=timedelta(seconds=30))
    world.reconcile("registry")
    status = world.status("registry")
    assert status["phase"] == "Running" and status["reason"] == "JobCreated"
    assert world.kube.deleted_jobs == []


@pytest.mark.parametrize(
    "source",
    [
        {"object": {"bucket": "uploads", "key": "shop-b/their.csv"}},  # another tenant's
        {"object": {"bucket": "catalog", "key": f"{NS}/main/CURRENT"}},  # a catalog object
        {"object": {"bucket": "uploads", "key": f"{NS}/../shop-b/their.csv"}},
    ],
    ids=["other-namespace", "catalog-bucket", "dot-dot"],
)
def test_a_source_outside_the_namespaces_uploads_fails_source_not_allowed(world, source):
    world.apply("foreign", source=source)
    world.reconcile("foreign")
    status = world.status("foreign")
    assert status["phase"] == "Failed" and status["reason"] == "SourceNotAllowed", status
    # Refused before anything was minted or started.
    assert world.kube.jobs == {} and world.credentials.asked == []
    assert world.kube.secrets == {}


def test_a_url_source_gets_credentials_for_its_catalog_only(world):
    world.apply("feed", source={"url": "https://feeds.example.com/p.csv"})
    world.reconcile("feed")
    assert world.credentials.asked == [(str(world.root / NS / "main" / "*"), None)]
    assert world.status("feed")["phase"] == "Running"


def test_terminal_and_deleted_imports_are_left_alone(world):
    world.apply("done")
    world.write_result("done")
    world.reconcile("done")
    before = world.kube.get_import(NS, "done")
    events = list(world.kube.events)
    # Its result gone, no Job, the store down: nothing of that is looked at any more.
    catalog, uid = world._catalog("done")
    world.store.inner.delete(catalog.import_key(uid, "result.json"))
    world.minio(up=False)
    world.reconcile("done")
    assert world.kube.get_import(NS, "done") == before and world.kube.events == events
    assert world.kube.jobs == {}
    world.minio(up=True)

    # ...and it holds no queue: the next import of its catalog starts at once.
    world.apply("after")
    world.reconcile("after")
    assert world.status("after")["phase"] == "Running"

    world.apply("going", metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"})
    world.reconcile("going")
    assert world.status("going") == {} and world.kube.job_of(NS, "going") is None


def test_a_new_generation_of_a_finished_import_is_not_terminal(world):
    """A status written for an older spec does not end the import (observedGeneration)."""
    world.apply("edited")
    world.write_result("edited")
    world.reconcile("edited")
    world.kube.imports[(NS, "edited")]["metadata"]["generation"] = 2
    events = len(world.kube.events)
    world.reconcile("edited")  # the result of that import id is still the truth
    status = world.status("edited")
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 2
    assert len(world.kube.events) == events + 1


def test_the_webhook_is_told_only_when_the_import_asks_for_it(world):
    world.apply("quiet")
    world.write_result("quiet")
    world.reconcile("quiet")
    assert world.notifier.sent == [] and (NS, SIGNING_SECRET) not in world.kube.secrets

    hook = "https://hooks.example.com/productimport"
    world.apply("loud", notify={"webhook": hook})
    world.reconcile("loud")
    world.kube.complete(NS, world.job("loud"))
    world.write_result("loud")
    world.reconcile("loud")
    assert [(url, name) for url, name, _ in world.notifier.sent] == [(hook, "loud")]
    sent, stored = world.notifier.sent[0][2], world.status("loud")
    assert sent["phase"] == "Succeeded" and sent["counts"]["created"] == 1994
    # Sent after the status was written, and saying what the resource says.
    for key in ("phase", "reason", "message", "counts", "catalogVersion", "conditions"):
        assert sent[key] == stored[key], key
    # The namespace's signing key, where the receiver's owner can read it.
    signing = world.kube.secrets[(NS, SIGNING_SECRET)]
    assert signing["stringData"] == {"key": "signing-key-of-shop-a"}
    assert "ownerReferences" not in signing["metadata"]  # outlives any one import


def test_a_failed_import_with_a_webhook_is_told_too(world):
    world.apply("hooked", notify={"webhook": "https://hooks.example.com/x"})
    world.cancel("hooked")
    world.reconcile("hooked")
    ((_, name, status),) = world.notifier.sent
    assert (name, status["phase"], status["reason"]) == ("hooked", "Failed", "Cancelled")


def test_a_failed_webhook_is_told_as_a_warning_event(world):
    obj = world.apply("unheard", notify={"webhook": "https://hooks.example.com/x"})
    world.reconciler._webhook_failed(obj, "https://hooks.example.com/x answered 500")
    (event,) = world.kube.events
    assert event["type"] == "Warning" and event["reason"] == "WebhookFailed"
    assert "answered 500" in event["message"]


def test_status_patches_remove_a_stale_progress(world):
    """The terminal status of a cancelled import drops the running progress (a merge
    patch with progress: None), as the API server does."""
    world.apply("p")
    world.reconcile("p")
    world.kube.run(NS, world.job("p"))
    world.write_progress("p", "reading", 10)
    world.reconcile("p")
    assert world.status("p")["progress"]["stage"] == "reading"
    world.cancel("p")
    world.reconcile("p")
    assert "progress" not in world.status("p")
    assert json.dumps(world.status("p"))  # plain JSON, as the API server stores it


def test_the_loader_starting_is_told_once(world):
    """ImportStarted when the loader's Pod runs (JobCreated already said Running)."""
    world.apply("magento")
    world.reconcile("magento")
    world.kube.run(NS, world.job("magento"))
    world.reconcile("magento")
    world.write_progress("magento", "validating", 500)
    world.reconcile("magento")
    world.reconcile("magento")
    assert world.kube.reasons(NS, "magento") == ["JobCreated", "ImportStarted"]
    assert world.status("magento")["reason"] == "JobRunning"


# -- one source of truth: the catalog's history (issue 15, scenarios 1 and 3) -------------

TWO_ROWS = "sku,name,price\nA,Alpha,1\nB,Beta,2\n"


@pytest.mark.parametrize(
    ("job_reason", "container"),
    [
        pytest.param(
            "BackoffLimitExceeded", _terminated(75, message="MinIO unavailable while writing"),
            id="minio-lost-after-the-commit",
        ),
        pytest.param("DeadlineExceeded", None, id="deadline"),
    ],
)  # fmt: skip
def test_a_failed_job_whose_import_committed_ends_succeeded(world, job_reason, container):
    """Scenario 1: the loader committed, then its Job failed before a result was written
    (MinIO lost after the commit, the deadline): the catalog holds the import, so the
    import Succeeded, and its condition says the Job failed after the commit."""
    world.apply("committed")
    world.reconcile("committed")
    job = world.job("committed")
    world.kube.run(NS, job)
    world.commit("committed", TWO_ROWS)
    world.drop_result("committed")
    if container is not None:
        world.kube.add_pod(NS, job, container=container, status={"phase": "Failed"})
    world.kube.fail(NS, job, reason=job_reason, message="the Job failed", failed=4)
    world.reconcile("committed")

    status = world.status("committed")
    assert status["phase"] == "Succeeded" and status["reason"] == "CommittedJobFailed", status
    assert status["catalogVersion"] == 1
    assert status["counts"]["created"] == 2 and status["counts"]["rows"] == 2
    assert status["message"].startswith("committed as catalog version 1 (2 rows: 2 created")
    assert "but the Job then failed" in status["message"]
    for type_ in ("Ready", "Succeeded"):
        condition = _condition(status, type_)
        assert condition["status"] == "True" and condition["reason"] == "CommittedJobFailed"
    assert status["errorsRef"].endswith("errors.csv") and status["jobName"] == job
    assert world.kube.reasons(NS, "committed")[-1] == "ImportSucceeded"


def test_a_completed_job_without_a_result_whose_import_committed_ends_succeeded(world):
    world.apply("quiet")
    world.reconcile("quiet")
    world.commit("quiet", TWO_ROWS)
    world.drop_result("quiet")
    world.kube.complete(NS, world.job("quiet"))
    for _ in range(2):  # result_read_attempts: the store may lag
        world.reconcile("quiet")
        assert world.status("quiet")["phase"] == "Running"
    world.reconcile("quiet")
    status = world.status("quiet")
    assert status["phase"] == "Succeeded" and status["reason"] == "CommittedResultMissing"
    assert status["catalogVersion"] == 1 and status["counts"]["created"] == 2
    assert "committed as catalog version 1" in status["message"]


def test_minio_down_after_the_job_failed_holds_the_import_until_the_catalog_answers(world):
    """Scenario 3 with a failed Job: past store_retry_seconds the import used to fail as
    StoreUnavailable, whatever the catalog held. It now waits in its phase, then follows
    the catalog's history."""
    world.apply("unsure")
    world.reconcile("unsure")
    job = world.job("unsure")
    world.commit("unsure", TWO_ROWS)
    world.drop_result("unsure")
    world.kube.add_pod(
        NS, job, container=_terminated(75, message="MinIO unavailable"), status={"phase": "Failed"}
    )
    world.kube.fail(NS, job, failed=4)
    world.minio(up=False)
    for step in (0, 30, 31, 3600):
        world.clock.now += step
        with pytest.raises(TemporaryFailure):
            world.reconcile("unsure")
        status = world.status("unsure")
        assert status["phase"] == "Running" and status["reason"] == "WaitingForCatalog", status
        assert f"the Job {job} failed; waiting for the store" in status["message"]
    world.minio(up=True)
    world.reconcile("unsure")
    status = world.status("unsure")
    assert status["phase"] == "Succeeded" and status["reason"] == "CommittedJobFailed", status
    assert status["counts"]["created"] == 2


def test_a_superseded_loader_fails_the_import_superseded(world):
    """The loader's own word still counts where the catalog does not hold the import."""
    world.apply("late")
    world.reconcile("late")
    job = world.job("late")
    world.write_result(
        "late", phase="Failed", reason="Superseded", catalogVersion=3,
        message="import x (sequence 3), admitted after this one (sequence 2), has already "
        "committed version 3",
    )  # fmt: skip
    world.kube.add_pod(NS, job, container=_terminated(65), status={"phase": "Failed"})
    world.kube.fail(NS, job, reason="PodFailurePolicy", message="exit code 65")
    world.reconcile("late")
    status = world.status("late")
    assert status["phase"] == "Failed" and status["reason"] == "Superseded", status
    assert "admitted after this one" in status["message"]


# -- fencing: a sequence per catalog, in the order imports run ---------------------------


def _sequence_arg(world: World, name: str) -> str | None:
    job = world.kube.get_job(NS, world.job(name))
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--sequence") + 1] if "--sequence" in args else None


def _annotation(world: World, name: str) -> str | None:
    meta = world.kube.imports[(NS, name)]["metadata"]
    return (meta.get("annotations") or {}).get(ANNOTATION_SEQUENCE)


def test_each_import_runs_with_a_sequence_that_grows_in_admission_order(world):
    for name in ("first", "second", "third"):
        world.apply(name)
    for name in ("third", "second", "first"):
        world.reconcile(name)
    assert _sequence_arg(world, "first") == "1" and _annotation(world, "first") == "1"
    # A queued import has none yet: it gets its number as it takes the catalog.
    assert _annotation(world, "second") is None and _annotation(world, "third") is None
    for name, following, expected in (("first", "second", "2"), ("second", "third", "3")):
        world.kube.complete(NS, world.job(name))
        world.write_result(name)
        world.reconcile(name)
        assert _sequence_arg(world, following) == expected
        assert _annotation(world, following) == expected
    # Each catalog counts for itself.
    world.apply("elsewhere", catalog="outlet")
    world.reconcile("elsewhere")
    assert _sequence_arg(world, "elsewhere") == "1"


def test_a_job_created_again_runs_with_the_same_sequence(world):
    world.apply("again")
    world.reconcile("again")
    world.kube.delete_job(NS, world.job("again"))  # kubectl delete job --cascade=orphan
    world.reconcile("again")
    assert _sequence_arg(world, "again") == "1" and _annotation(world, "again") == "1"


def test_sequences_continue_above_the_catalogs_own_commits(world):
    """The ProductImports that carried earlier numbers may have been deleted: the
    catalog's history still holds the highest, and the next import goes above it."""
    world.engine_import(TWO_ROWS, "deleted-long-ago", sequence=7)
    world.apply("next")
    world.reconcile("next")
    assert _sequence_arg(world, "next") == "8"


# -- running limits: cluster-wide, per namespace, fair between namespaces ----------------


def _limited_world(tmp_path: Path, limit: int, per_namespace: int = 0) -> World:
    world = World(tmp_path / "store", "watch")  # limits need the whole cluster's view
    world.settings.max_running_imports = limit
    world.settings.max_running_imports_per_namespace = per_namespace
    return world


def _apply_in(world: World, namespace: str, name: str) -> None:
    source = {"object": {"bucket": "uploads", "key": f"{namespace}/{name}.csv"}}
    world.kube.apply(namespace, name, {"catalog": name, "source": source})


def _running(world: World) -> list[tuple[str, str]]:
    return sorted(
        (ns, name)
        for (ns, name) in world.kube.imports
        if world.kube.job_of(ns, name) is not None
        and not world.kube.status(ns, name).get("completionTime")
    )


def test_no_more_imports_run_than_the_cluster_limit_and_a_freed_slot_starts_the_next(
    tmp_path: Path,
):
    world = _limited_world(tmp_path, limit=2)
    for name in ("c1", "c2", "c3"):
        _apply_in(world, NS, name)
        world.reconciler.reconcile(NS, name)
    assert _running(world) == [(NS, "c1"), (NS, "c2")]
    waiting = world.kube.status(NS, "c3")
    assert waiting["phase"] == "Queued"
    assert "at most 2 imports run at once" in waiting["message"]
    # c1 ends: its slot goes to c3 at once, not at c3's next poll.
    world.kube.complete(NS, world.kube.job_of(NS, "c1")["metadata"]["name"])
    world.write_result("c1")
    world.reconciler.reconcile(NS, "c1")
    assert world.kube.status(NS, "c1")["phase"] == "Succeeded"
    assert world.kube.job_of(NS, "c3") is not None


def test_a_flooding_namespace_does_not_starve_another(tmp_path: Path):
    """Issue 16's target: with a running limit, one namespace with many queued imports and
    one with a few, the few all start before the many's tenth does."""
    world = _limited_world(tmp_path, limit=2)
    flood, few = "flood", "few"
    for i in range(30):
        _apply_in(world, flood, f"f{i:02d}")
    for i in range(3):
        _apply_in(world, few, f"s{i}")
    started: list[tuple[str, str]] = []

    def pass_over_everything() -> None:
        for ns, name in sorted(world.kube.imports):
            world.reconciler.reconcile(ns, name)

    while len(started) < 12:
        pass_over_everything()
        now = _running(world)
        started += [r for r in now if r not in started]
        for ns, name in now:  # every running import finishes
            world.kube.complete(ns, world.kube.job_of(ns, name)["metadata"]["name"])
            catalog = Catalog(world.store.inner, ns, name)
            uid = world.kube.imports[(ns, name)]["metadata"]["uid"]
            result = ImportResult(
                importId=uid, namespace=ns, catalog=name, phase="Succeeded",
                reason="ImportSucceeded", message="done", counts=ImportCounts(),
                catalogVersion=0, completedAt=datetime.now(UTC),
            )  # fmt: skip
            key = catalog.import_key(uid, "result.json")
            world.store.inner.put(key, result.model_dump_json().encode(), "application/json")
            world.reconciler.reconcile(ns, name)
    first_ten_of_flood = [r for r in started if r[0] == flood][:10]
    last_of_few = max(started.index(r) for r in started if r[0] == few)
    assert len([r for r in started if r[0] == few]) == 3
    assert last_of_few < started.index(first_ten_of_flood[-1])


def test_a_namespace_limit_holds_while_others_still_start(tmp_path: Path):
    world = _limited_world(tmp_path, limit=0, per_namespace=1)
    for ns, name in [("a", "a1"), ("a", "a2"), ("b", "b1")]:
        _apply_in(world, ns, name)
        world.reconciler.reconcile(ns, name)
    assert _running(world) == [("a", "a1"), ("b", "b1")]
    waiting = world.kube.status("a", "a2")
    assert waiting["phase"] == "Queued"
    assert "namespace 'a' has 1 imports running, its limit" in waiting["message"]


def test_queue_positions_follow_the_queue_in_bounded_batches_without_a_pass(tmp_path: Path):
    """A waiting import's status.queuePosition is kept current by the periodic refresh
    (no pass of its own, no write for an import whose place did not change), at most
    `queue_position_updates` writes per refresh, the front of the queues first."""
    world = World(tmp_path / "store", "watch")
    world.settings.queue_position_updates = 2
    for name in ("i0", "i1", "i2", "i3", "i4"):
        world.apply(name)
        world.reconcile(name)
    assert [world.status(f"i{i}").get("queuePosition") for i in range(5)] == [None, 1, 2, 3, 4]
    assert world.reconciler.refresh_positions() == 0  # nothing moved: nothing written

    world.kube.complete(NS, world.job("i0"))
    world.write_result("i0")
    world.reconcile("i0")  # i1 takes the catalog; i2..i4 are not looked at
    assert [world.status(f"i{i}").get("queuePosition") for i in range(2, 5)] == [2, 3, 4]
    assert world.reconciler.refresh_positions() == 2  # the cap: the front two
    assert [world.status(f"i{i}").get("queuePosition") for i in range(2, 5)] == [1, 2, 4]
    assert world.reconciler.refresh_positions() == 1
    assert [world.status(f"i{i}").get("queuePosition") for i in range(2, 5)] == [1, 2, 3]


def test_imports_waiting_for_a_running_slot_get_their_place_in_the_fair_order(tmp_path: Path):
    world = _limited_world(tmp_path, limit=1)
    for ns, name in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")]:
        _apply_in(world, ns, name)
        world.reconciler.reconcile(ns, name)
    assert _running(world) == [("a", "a1")]
    assert world.kube.status("b", "b1")["reason"] == "WaitingForSlot"
    world.reconciler.refresh_positions()
    # b has nothing running: the next slot is b1's, then a's in their order.
    places = {n: world.kube.status(ns, n).get("queuePosition") for ns, n in
              [("b", "b1"), ("a", "a2"), ("a", "a3")]}  # fmt: skip
    assert places == {"b1": 1, "a2": 2, "a3": 3}
    # A pass over a waiting import keeps the place the refresh gave it.
    world.reconciler.reconcile("a", "a3")
    assert world.kube.status("a", "a3")["queuePosition"] == 3
    assert world.reconciler.refresh_positions() == 0


def test_a_catalogs_next_sequence_is_found_without_listing_the_namespace(tmp_path: Path):
    """With the watch-fed queues, admitting an import reads its catalog's sequences from
    memory: a namespace with thousands of imports is not listed once per start."""
    world = World(tmp_path / "store", "watch")
    listed: list[str] = []
    original = world.kube.list_imports
    world.kube.list_imports = lambda ns: listed.append(ns) or original(ns)  # type: ignore[method-assign]
    for name in ("first", "second"):
        world.apply(name)
        world.reconcile(name)
    world.kube.complete(NS, world.job("first"))
    world.write_result("first")
    world.reconcile("first")
    assert listed == []
    sequences = [int(world.kube.imports[(NS, n)]["metadata"]["annotations"][ANNOTATION_SEQUENCE])
                 for n in ("first", "second")]  # fmt: skip
    assert sequences == [1, 2]


def test_a_start_under_way_holds_its_slot_and_a_stale_event_does_not_free_it():
    """Starts run outside the slot lock (so starts in different catalogs overlap): the
    slot is reserved first, and a watch event sent before the operator's own writes must
    not give the slot back while the Job is made, nor after."""
    queues = ImportQueues()

    def obj(name: str, **status: Any) -> dict[str, Any]:
        return {"metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}",
                             "creationTimestamp": f"2026-01-01T00:00:0{name[-1]}Z"},
                "spec": {"catalog": name}, "status": status}  # fmt: skip

    for name in ("c1", "c2"):
        queues.observe(obj(name))
    assert [w.name for w in queues.next_to_start(limit=1, per_namespace=0)] == ["c1"]
    queues.reserve("uid-c1")
    assert queues.next_to_start(limit=1, per_namespace=0) == []  # c1 is starting
    queues.observe(obj("c1"))  # an event from before the start: no jobName yet
    assert queues.next_to_start(limit=1, per_namespace=0) == []
    queues.started("uid-c1")
    queues.release("uid-c1")  # the start returned: the Job holds the slot now
    queues.observe(obj("c1"))
    assert queues.next_to_start(limit=1, per_namespace=0) == []
    queues.reserve("uid-c2")
    queues.release("uid-c2")  # a start that made no Job gives its slot back
    queues.forget("uid-c1")
    assert [w.name for w in queues.next_to_start(limit=1, per_namespace=0)] == ["c2"]


# -- a partitioned import (docs/scaling.md) ------------------------------------------------


def _run_step(world: World, name: str, job: dict[str, Any], csv: Path) -> None:
    """What a step's Pods do: the loader, in-process, with the Job's own arguments (the
    source swapped for a local copy), then the Job completes."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    stage = args[args.index("--stage") + 1]
    workers = int(args[args.index("--workers") + 1])
    catalog, uid = world._catalog(name)
    indices = range(job["spec"]["completions"]) if stage == "merge" else [0]
    for index in indices:  # an Indexed Job: one Pod per completion index
        opts = ImportOptions(
            source=str(csv), catalog=catalog.name, namespace=NS, store=str(world.root),
            import_id=uid, stage=stage, workers=workers, worker=index,
            error_policy={"maxErrors": None, "maxErrorRatio": None},
        )  # fmt: skip
        _result, code = run_import(opts, store=world.store.inner)
        assert code == 0, (stage, index)
    world.kube.complete(NS, job["metadata"]["name"])


def test_a_partitioned_import_runs_its_steps_as_jobs_and_commits_once(world):
    world.apply("big", job={"parallelism": 3})
    csv = world.root.parent / "big.csv"
    csv.write_text("sku,name,price\n" + "".join(f"S{i},Product {i},{i}\n" for i in range(30)))
    world.reconcile("big")
    jobs = []
    for step in ("prepare", "merge", "commit"):
        job = world.kube.get_job(NS, world.status("big")["jobName"])
        assert (job is not None and step in job["metadata"]["name"]) or step == "commit"
        jobs.append(job)
        status = world.status("big")
        assert status["phase"] == "Running", status
        world.kube.run(NS, job["metadata"]["name"])
        world.reconcile("big")
        assert world.status("big")["message"].startswith(f"{step} step"), world.status("big")
        _run_step(world, "big", job, csv)
        world.reconcile("big")

    prepare, merge, commit = jobs
    assert "completionMode" not in prepare["spec"]
    assert (merge["spec"]["completionMode"], merge["spec"]["completions"],
            merge["spec"]["parallelism"]) == ("Indexed", 3, 3)  # fmt: skip
    assert commit["metadata"]["name"] == job_name(world.kube.imports[(NS, "big")])
    for job in jobs:  # every step runs with the import's one set of credentials
        loader = job["spec"]["template"]["spec"]["containers"][0]
        assert loader["envFrom"] == [{"secretRef": {"name": commit["metadata"]["name"]}}]
    status = world.status("big")
    assert status["phase"] == "Succeeded", status
    assert status["counts"]["created"] == 30 and status["catalogVersion"] == 1
    catalog, uid = world._catalog("big")
    assert [v.version for v in catalog.history()] == [1]
    # What the steps handed on is gone; the import's report stays.
    documents = [k.rsplit("/", 1)[1] for k in world.store.inner.list(catalog.import_key(uid, ""))]
    assert "result.json" in documents and not [d for d in documents if d.startswith("stage-")]
    assert world.kube.reasons(NS, "big").count("StepStarted") == 2


def test_a_cancel_between_two_steps_ends_the_import_without_the_next_step(world):
    world.apply("big", job={"parallelism": 2})
    csv = world.root.parent / "big.csv"
    csv.write_text("sku,name,price\nA,Alpha,1\nB,Beta,2\n")
    world.reconcile("big")
    prepare = world.kube.get_job(NS, world.status("big")["jobName"])
    _run_step(world, "big", prepare, csv)
    world.cancel("big")
    world.reconcile("big")
    status = world.status("big")
    assert (status["phase"], status["reason"]) == ("Failed", "Cancelled"), status
    assert len(world.kube.jobs) == 1  # no merge Job was made
    catalog, _uid = world._catalog("big")
    assert catalog.history() == []


def test_only_large_object_sources_are_partitioned_by_default(world, monkeypatch):
    world.settings.parallelism = 4
    world.settings.parallel_threshold_bytes = 100
    sizes = {"uploads/shop-a/big.csv": 100, "uploads/shop-a/small.csv": 99}
    monkeypatch.setattr(
        world.reconciler.reports, "source_size", lambda bucket, key: sizes[f"{bucket}/{key}"]
    )
    world.apply("big")
    world.apply("small", catalog="other")
    world.apply("dry", catalog="third", dryRun=True, job={"parallelism": 4},
                source={"object": {"bucket": "uploads", "key": f"{NS}/big.csv"}})  # fmt: skip
    for name in ("big", "small", "dry"):
        world.reconcile(name)
    assert "-prepare-" in world.status("big")["jobName"]
    assert "-import-" in world.status("small")["jobName"]
    assert "-import-" in world.status("dry")["jobName"]  # a dry run is never split


def test_merge_pods_that_cannot_start_fail_the_import_but_pods_waiting_for_room_do_not(world):
    """The prepare step's progress is there while the merge step starts: its own Pods
    are still watched, until one of them runs."""
    world.apply("big", job={"parallelism": 2})
    csv = world.root.parent / "big.csv"
    csv.write_text("sku,name,price\nA,Alpha,1\nB,Beta,2\n")
    world.reconcile("big")
    _run_step(world, "big", world.kube.get_job(NS, world.status("big")["jobName"]), csv)
    world.reconcile("big")
    merge = world.status("big")["jobName"]
    assert "-merge-" in merge
    world.kube.add_pod(NS, merge, container={"running": {}}, status={"phase": "Running"})
    unplaced = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}  # fmt: skip
    world.kube.add_pod(NS, merge, status=unplaced, age=timedelta(seconds=900))
    world.reconcile("big")
    assert world.status("big")["phase"] == "Running"  # one runs, the other waits for room

    world.kube.pods.clear()
    never = {"waiting": {"reason": "ErrImageNeverPull", "message": "no such image"}}
    world.kube.add_pod(NS, merge, container=never)
    world.reconcile("big")
    status = world.status("big")
    assert (status["phase"], status["reason"]) == ("Failed", "ImageUnavailable"), status
    assert (NS, merge) in world.kube.deleted_jobs
