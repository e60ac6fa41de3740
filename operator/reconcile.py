"""One idempotent pass over one ProductImport: look at the world, take the next step.

Every decision is made from what the API server and the store say now, never from
memory, so an operator killed at any moment and started again carries on correctly:
- no Job yet: queue behind the catalog's running import, or create the Job (its name is
  derived from the resource, so a second create is a harmless 409);
- a Job running: copy its progress into the status;
- a Job finished, or the loader's result already in the store: write the final status.
Passes over imports of one catalog are serialised by a lock, so the "is it my turn"
check and the Job creation are one step.

What it talks to comes in through seams, so the decision table runs in memory
(tests/operator/test_decisions.py): the API server (`KubeApi`), the store the loaders
write to (`ImportReports`), the loader's credentials (`LoaderCredentials`), the webhook
deliveries (`Notifier`) and the clock that times a store outage.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from productimport.engine.catalog import Catalog, CatalogVersion
from productimport.engine.errors import EXIT_TEMPORARY, ImportFailure, TemporaryFailure
from productimport.models.product import ImportCounts, ImportResult
from productimport.models.resource import (
    ANNOTATION_CANCEL,
    ANNOTATION_MERGE_PODS,
    Phase,
    ProductImportSpec,
)
from productimport.operator import credentials, mail, metrics
from productimport.operator.conditions import is_terminal, phase_of, status_patch
from productimport.operator.jobs import (
    STEPS,
    build_job,
    job_name,
    merge_pods,
    step_job_name,
    step_of,
    steps,
)
from productimport.operator.kube import JobRefused, KubeApi
from productimport.operator.notify import SIGNING_SECRET, Notifier
from productimport.operator.queue import (
    ANNOTATION_SEQUENCE,
    ImportQueues,
    Waiting,
    committed_sequence,
    holder_and_queue,
    sequence_of,
)
from productimport.operator.settings import OperatorSettings
from productimport.operator.store import ImportReports

log = logging.getLogger(__name__)

# What earlier versions copied into every import namespace: the operator's own MinIO keys.
LEGACY_SHARED_SECRET = "productimport-loader-minio"
NORMAL, WARNING = "Normal", "Warning"


def _job_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond
    return None


def _attempts(job: dict[str, Any]) -> int:
    """Pods the Job has started so far (running, succeeded or failed)."""
    status = job.get("status") or {}
    return sum(int(status.get(k) or 0) for k in ("active", "succeeded", "failed"))


# Why a loader container can be stuck waiting, as the kubelet says it, and the reason the
# import then fails with. None of these ends by itself.
CANNOT_START = {
    "ErrImageNeverPull": "ImageUnavailable",  # absent, and pull policy Never
    "InvalidImageName": "ImageUnavailable",
    "CreateContainerConfigError": "PodCannotStart",  # e.g. runAsNonRoot and a root image
    "CreateContainerError": "PodCannotStart",
}
# These may clear up (a registry down for a moment): they fail after a grace period.
PULL_BACKOFF = {"ErrImagePull": "ImageUnavailable", "ImagePullBackOff": "ImageUnavailable"}


def _unscheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The Pod's PodScheduled condition while the scheduler cannot place it."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond
    return None


def _cannot_start(
    pods: list[dict[str, Any]], pull_grace: float, pending_timeout: float = math.inf
) -> tuple[str, str] | None:
    """(reason, message) when the loader's Pod is stuck before it runs, else None. A Pod
    the scheduler cannot place, or one placed whose container is still waiting, fails
    after `pending_timeout`: nothing frees a node's CPU for a request larger than the
    node, and the Job's deadline is hours away."""
    now = datetime.now(UTC)
    for pod in pods:
        created = _parse_time(pod["metadata"].get("creationTimestamp")) or now
        waited = (now - created).total_seconds()
        unscheduled = _unscheduled(pod)
        if unscheduled is not None and waited >= pending_timeout:
            return (
                "Unschedulable",
                f"the loader Pod {pod['metadata']['name']} could not be scheduled in "
                f"{waited:.0f}s: {unscheduled.get('reason') or 'Unschedulable'}: "
                f"{unscheduled.get('message') or 'no node can run it'}",
            )
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            why = waiting.get("reason", "")
            reason = CANNOT_START.get(why)
            if reason is None and why in PULL_BACKOFF and waited >= pull_grace:
                reason = PULL_BACKOFF[why]
            if reason is None and why and waited >= max(pending_timeout, pull_grace):
                # Placed, yet never started (ContainerCreating: a volume that does not
                # mount, the node's network): nothing the Job's retries would change.
                # Never before the pull grace: pulling a large image is ContainerCreating
                # too, and a short pending timeout is meant for the scheduler's refusals.
                reason = "PodNotStarted"
            if reason is not None:
                detail = waiting.get("message") or why
                return (
                    reason,
                    f"the loader Pod {pod['metadata']['name']} cannot start: {why}: {detail}",
                )
    return None


def _no_pod(
    job: dict[str, Any], pods: list[dict[str, Any]], timeout: float
) -> tuple[str, str] | None:
    """(reason, message) when the Job has made no Pod in `timeout` (the API server refuses
    them: a ResourceQuota or a LimitRange of the namespace), else None."""
    meta = job["metadata"]
    created = _parse_time(meta.get("creationTimestamp"))
    if pods or _attempts(job) or created is None or meta.get("deletionTimestamp"):
        return None
    waited = (datetime.now(UTC) - created).total_seconds()
    if waited < timeout:
        return None
    return (
        "PodNotCreated",
        f"the Job {meta['name']} has made no loader Pod in {waited:.0f}s; its Events say "
        f"why (kubectl describe job {meta['name']} -n {meta['namespace']}): a ResourceQuota "
        "or a LimitRange of the namespace refusing its Pods, most often",
    )


def _alive(pods: list[dict[str, Any]]) -> list[str]:
    """The Pods whose loader may still run, as 'name (state)': not yet Succeeded or
    Failed, terminating ones included (a deleted loader runs on for its grace period)."""
    alive = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if phase in ("Succeeded", "Failed"):
            continue
        state = "terminating" if pod["metadata"].get("deletionTimestamp") else phase.lower()
        alive.append(f"{pod['metadata']['name']} ({state})")
    return alive


@dataclass
class _CreateFailures:
    """An import whose Job the API server keeps refusing: since when (the reconciler's
    clock), how many attempts so far, and when the next may be made."""

    since: float
    attempts: int = 0
    next_at: float = 0.0


def _loader_result(log_tail: str) -> ImportResult | None:
    """The result document the loader printed (--json), if the log's tail holds it."""
    for line in reversed(log_tail.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"phase"' in line:
            try:
                return ImportResult.model_validate_json(line)
            except ValidationError:
                return None
    return None


class _StoreHold(TemporaryFailure):
    """The Job has ended but the store cannot say whether the import committed: the
    import keeps its phase and the pass is tried again, with no deadline (a terminal
    status written now could contradict the catalog)."""


class _TryAgain(TemporaryFailure):
    """The import waits for something that is not the store (a loader Pod of its catalog
    to end, the back-off before its Job is created again): the pass is tried again soon
    (kopf's retry), and the store outage's clock is not started."""


def _summary(counts: ImportCounts) -> str:
    return (
        f"{counts.rows} rows: {counts.created} created, {counts.updated} updated, "
        f"{counts.unchanged} unchanged, {counts.deleted} deleted, {counts.rejected} rejected"
    )


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        settings: OperatorSettings,
        reports: ImportReports | None = None,
        *,
        loader_credentials: credentials.LoaderCredentials | None = None,
        notifier: Notifier | None = None,
        mailer: mail.Mailer | None = None,
        clock: Callable[[], float] = time.monotonic,
        queues: ImportQueues | None = None,
    ) -> None:
        self.kube = kube
        # The catalogs' queues from the watch (handlers.py feeds them); without them, a
        # LIST per decision (the decision tests, or a reconciler used on its own).
        self.queues = queues
        self.settings = settings
        self.reports = reports or ImportReports(settings.store)
        # Each Job's own MinIO keys (STS at MinIO unless given).
        self.loader_credentials = loader_credentials or credentials.StsCredentials(
            settings.minio, settings.loader_credentials_seconds
        )
        self._clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # Taken after a catalog's lock, around the running-limit decision and the Job.
        self._slots = threading.Lock()
        self._guard = threading.Lock()
        # Per import: passes that found a finished Job but no result, or no store at all.
        self._missing_results: dict[str, int] = defaultdict(int)
        self._store_down_since: dict[str, float] = {}
        # Per import: the API server refusing its Job (kept by this process only).
        self._create_failures: dict[str, _CreateFailures] = {}
        # Per catalog: the highest fencing sequence this process has given an import.
        self._issued: dict[tuple[str, str], int] = {}
        self._notifier = notifier
        self._mailer = mailer

    @property
    def notifier(self) -> Notifier:
        """Webhook deliveries (made on first use: most imports have no webhook)."""
        if self._notifier is None:
            self._notifier = Notifier(
                self.settings.signing_key(), self.settings.egress, self._webhook_failed
            )
        return self._notifier

    @property
    def mailer(self) -> mail.Mailer:
        """Mail deliveries (made on first use: most imports ask for no mail)."""
        if self._mailer is None:
            self._mailer = mail.Mailer.with_events(self.settings, self.kube)
        return self._mailer

    @mailer.setter
    def mailer(self, mailer: mail.Mailer) -> None:
        self._mailer = mailer

    def _mail(self, obj: dict[str, Any], status: dict[str, Any], address: str) -> None:
        """spec.notify.email: handed to the mailer's threads, never sent from here."""
        try:
            if not self.settings.smtp_host:
                self.kube.event(
                    obj, WARNING, mail.EMAIL_NOT_CONFIGURED,
                    f"spec.notify.email asks for mail to {address}, but this operator has no "
                    "SMTP server (PRODUCTIMPORT_OPERATOR_SMTP_HOST; chart value "
                    "operator.smtp.host): nothing was sent",
                )  # fmt: skip
                return
            self.mailer.submit(address, obj, status)
        except Exception:  # the status is written; a mail is never worth a failed pass
            log.exception("could not hand the mail for %s/%s over", obj["metadata"]["namespace"],
                          obj["metadata"]["name"])  # fmt: skip

    def _webhook_failed(self, obj: dict[str, Any], why: str) -> None:
        self.kube.event(obj, WARNING, "WebhookFailed", f"the outcome was not delivered: {why}")

    def _lock(self, namespace: str, catalog: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, catalog)]

    # -- entry point --------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> None:
        obj = self.kube.get_import(namespace, name)
        if obj is None or is_terminal(obj) or obj["metadata"].get("deletionTimestamp"):
            return
        try:
            spec = ProductImportSpec.model_validate(obj["spec"])
        except ValidationError as exc:  # the CRD schema should make this unreachable
            self._finish_failed(obj, "InvalidSpec", f"the spec is not valid: {exc}")
            return
        with self._lock(namespace, spec.catalog):
            obj = self.kube.get_import(namespace, name)
            if obj is None or is_terminal(obj):
                return
            uid = obj["metadata"]["uid"]
            if self.queues is not None:
                self.queues.observe(obj)  # it is in its queue, whatever the watch has said
            try:
                finished = self._step(obj, spec)
                self._store_down_since.pop(uid, None)
            except (_StoreHold, _TryAgain):
                raise  # never failed for the outage: the catalog may hold the import
            except TemporaryFailure as exc:
                # The store is down: try again at the next passes, for a while.
                since = self._store_down_since.setdefault(uid, self._clock())
                if self._clock() - since < self.settings.store_retry_seconds:
                    raise
                self._finish_failed(
                    obj, "StoreUnavailable",
                    f"{exc} (still failing after {self.settings.store_retry_seconds:.0f}s)",
                )  # fmt: skip
                finished = True
        if finished:
            if self.queues is not None:
                self.queues.forget(uid)  # before the watch says so: the next may start now
            self._start_next(namespace, spec.catalog)

    def _step(self, obj: dict[str, Any], spec: ProductImportSpec) -> bool:
        """Returns whether the import reached a terminal state in this pass."""
        meta = obj["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        cancel = (meta.get("annotations") or {}).get(ANNOTATION_CANCEL) == "true"
        job = self._current_job(obj)

        if job is None:
            if cancel:  # its loader may still run (an orphan), or have committed
                return self._cancel(obj, spec, None)
            # The loader may have finished while nobody watched (operator down, Job
            # deleted by its TTL): its result in the store is the truth.
            try:
                result = self.reports.result(namespace, spec.catalog, uid)
            except TemporaryFailure as exc:
                # Starting the Job is still safe: the loader is idempotent by import id,
                # and it retries an unreachable store itself (exit 75, the Job's backoff).
                log.warning("store unreachable, starting %s/%s anyway: %s", namespace,
                            meta["name"], exc)  # fmt: skip
                result = None
            if result is not None:
                self._finish(obj, result)
                return True
            return self._start_or_queue(obj, spec)

        condition = _job_condition(job)
        if condition is None:
            if cancel:
                return self._cancel(obj, spec, job)
            return self._running(obj, spec, job)
        step = step_of(obj, job)
        if condition["type"] == "Complete" and step in STEPS[:-1]:
            if cancel:  # between two steps of a partitioned import: nothing runs
                return self._cancel(obj, spec, None)
            return self._next_step(obj, spec, job, step)

        pods = {"attempts": _attempts(job), "jobName": job["metadata"]["name"]}
        complete = condition["type"] == "Complete"
        try:
            outcome = self._outcome(namespace, spec.catalog, uid, complete)
        except ImportFailure as exc:  # unreachable (TemporaryFailure), or access refused
            # The Job has ended, but only the store knows how: a loader may have
            # committed just before MinIO went. Whatever the outage lasts, no terminal
            # status until the store answers (docs/operations.md, "One source of truth").
            ended = "completed" if complete else "failed"
            message = (
                f"the Job {pods['jobName']} {ended}; waiting for the store to tell whether "
                f"the import committed: {exc}"
            )
            self._patch_if_changed(
                obj, status_patch("running", "WaitingForCatalog", message, obj, **pods)
            )
            raise _StoreHold(message) from exc
        if outcome is None:
            return False  # a completed Job's result may still be on its way
        committed, result = outcome
        if committed is not None:
            # The catalog holds the import: it succeeded, whatever became of its Job.
            if complete:
                reason = "CommittedResultMissing"
                why = "the Job completed without leaving its result in the store"
            else:
                reason = "CommittedJobFailed"
                why = f"the Job then failed: {self._job_failure(job, condition)[1]}"
            self._finish_committed(obj, spec, committed, reason, why, result, **pods)
        elif result is not None:
            # The loader's own word: what it did, or why it failed (bad data,
            # Superseded, ...), or that it succeeded without a commit (nothing changed)
            # before its Job failed.
            self._finish(obj, result, **pods)
        elif complete:
            # Complete, no result, not in the catalog: a loader defect worth a clear failure.
            self._finish_failed(
                obj, "ResultMissing", "the Job completed but left no result in the store",
                **pods,
            )  # fmt: skip
        else:
            reason, message = self._job_failure(job, condition)
            self._finish_failed(obj, reason, message, **pods)
        return True

    def _cancel(
        self, obj: dict[str, Any], spec: ProductImportSpec, job: dict[str, Any] | None
    ) -> bool:
        """The cancel annotation, on an import whose Job has not ended (or is gone).

        Deleting the Job does not stop its loader at once: the Pod gets its grace period
        (30 s by default), and the loader stops at the SIGTERM only between two steps (a
        commit under way completes first), so it may commit meanwhile. (It is not its
        Pod's PID 1, which would ignore a SIGTERM sent before its handler is set: jobs.py.)
        The import stays Running, reason Cancelling, until no Pod of its Job is alive
        (its catalog's next import waits as long); then the catalog's history decides:
        committed, it Succeeded (reason CommittedBeforeCancel), else it is Cancelled."""
        meta = obj["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        status = obj.get("status") or {}
        name = job["metadata"]["name"] if job else status.get("jobName") or job_name(obj)
        if job is None and not status.get("jobName") and sequence_of(obj) is None:
            # Never admitted (the sequence comes before any Job): no loader ever ran.
            self._finish_failed(obj, "Cancelled", "cancelled before it started")
            return True
        if job is not None and not job["metadata"].get("deletionTimestamp"):
            self.kube.delete_job(namespace, name)
        ran = job is not None or bool(status.get("jobName"))
        fields = {"jobName": name, "attempts": _attempts(job) if job else status.get("attempts", 0)}
        fields = fields if ran else {}
        alive = _alive(
            [
                pod
                for s in steps(obj)
                for pod in self.kube.job_pods(namespace, step_job_name(obj, s))
            ]
        )
        if alive:
            message = (
                f"cancel requested: Job {name} deleted; waiting for its loader Pod "
                f"{', '.join(alive)} to end before telling whether the import committed"
            )
            patch = status_patch("running", "Cancelling", message, obj, **fields)
            if self._patch_if_changed(obj, patch):
                self.kube.event(obj, NORMAL, "Cancelling", message)
            return False
        try:
            committed = self._committed(namespace, spec.catalog, uid)
            result = self.reports.result(namespace, spec.catalog, uid) if committed else None
        except ImportFailure as exc:  # as for an ended Job: no terminal status unasked
            message = (
                f"cancel requested: Job {name} deleted and its loader gone; waiting for the "
                f"store to tell whether the import committed: {exc}"
            )
            patch = status_patch("running", "Cancelling", message, obj, **fields)
            self._patch_if_changed(obj, patch)
            raise _StoreHold(message) from exc
        if committed is not None:
            why = "the cancel came too late: the loader had committed before it stopped"
            self._finish_committed(
                obj, spec, committed, "CommittedBeforeCancel", why, result, **fields
            )
        else:
            what = (
                "cancelled while running; Job deleted, and its loader stopped without committing"
                if ran
                else "cancelled before its Job was created"
            )
            message = f"{what} (the catalog's history holds no commit of this import)"
            self._finish_failed(obj, "Cancelled", message, **fields)
        return True

    def _outcome(
        self, namespace: str, catalog: str, uid: str, complete: bool
    ) -> tuple[CatalogVersion | None, ImportResult | None] | None:
        """What the store says of an ended Job's import: the version it committed (the
        catalog's history) and the loader's result, as far as they are needed; None
        while a completed Job's result may still be on its way. Raises the engine's
        TemporaryFailure when the store does not answer."""
        if complete:
            result = self.reports.result(namespace, catalog, uid)
            if result is not None:
                return None, result  # written last, after the commit: it is the story
            self._missing_results[uid] += 1
            if self._missing_results[uid] < self.settings.result_read_attempts:
                return None
            return self._committed(namespace, catalog, uid), None
        # A failed Job (its deadline, its backoff limit, MinIO lost after the commit): the
        # catalog's history first.
        return self._committed(namespace, catalog, uid), self.reports.result(
            namespace, catalog, uid
        )

    def _committed(self, namespace: str, catalog: str, uid: str) -> CatalogVersion | None:
        """The catalog version this import committed, if it did (its history)."""
        return Catalog(self.reports.store, namespace, catalog).find_import(uid)

    def _finish_committed(
        self,
        obj: dict[str, Any],
        spec: ProductImportSpec,
        committed: CatalogVersion,
        reason: str,
        why: str,
        result: ImportResult | None,
        **pods: Any,
    ) -> None:
        """Succeeded, as the catalog's history says, with what went wrong after."""
        meta = obj["metadata"]
        counts = committed.counts or ImportCounts()
        catalog = Catalog(self.reports.store, meta["namespace"], spec.catalog)
        message = (
            f"committed as catalog version {committed.version} ({_summary(counts)}), but {why}"
        )
        self._finish(
            obj,
            ImportResult(
                importId=meta["uid"],
                namespace=meta["namespace"],
                catalog=spec.catalog,
                phase="Succeeded",
                reason=reason,
                message=message,
                counts=counts,
                catalogVersion=committed.version,
                errorsRef=catalog.store.ref(catalog.import_key(meta["uid"], "errors.csv")),
                errors=result.errors if result is not None else [],
                completedAt=committed.createdAt,
            ),
            **pods,
        )

    # -- queue --------------------------------------------------------------------------

    def _holder(
        self, namespace: str, catalog: str, check_jobs: bool = False
    ) -> tuple[Waiting | None, list[Waiting]]:
        """The import allowed to run in this catalog, and the queue behind it.

        An import with a Job holds the catalog until it is terminal (even if its Job has
        finished and only the status is left to write); otherwise the oldest non-terminal
        import gets it. From the watch-fed queues when the operator has them (no API
        call), else from a LIST; `check_jobs` also asks the API server which imports own
        a Job of the catalog (done once, right before a Job is created)."""
        if self.queues is not None:
            waiting = self.queues.waiting(namespace, catalog)
        else:
            waiting = [
                Waiting.of(o)
                for o in self.kube.list_imports(namespace)
                if (o.get("spec") or {}).get("catalog") == catalog
                and not is_terminal(o)
                and not o["metadata"].get("deletionTimestamp")
            ]
            check_jobs = True
        if check_jobs:
            owners = {
                ref["uid"]
                for job in self.kube.catalog_jobs(namespace, catalog)
                for ref in job["metadata"].get("ownerReferences") or []
            }
            waiting = [replace(w, has_job=w.has_job or w.uid in owners) for w in waiting]
        return holder_and_queue(waiting)

    def _start_or_queue(self, obj: dict[str, Any], spec: ProductImportSpec) -> bool:
        meta = obj["metadata"]
        holder, queue = self._holder(meta["namespace"], spec.catalog)
        if holder is not None and holder.uid == meta["uid"]:
            # About to start: confirm with the API server that no other import of the
            # catalog has a Job (the watch may not have told us yet).
            holder, queue = self._holder(meta["namespace"], spec.catalog, check_jobs=True)
        if holder is not None and holder.uid != meta["uid"]:
            position = 1 + next((i for i, w in enumerate(queue) if w.uid == meta["uid"]), 0)
            # The message names what it waits for and stays the same while it waits;
            # the position is a field of its own, kept current by refresh_positions.
            message = f"waiting for {holder.name} to finish importing into catalog {spec.catalog!r}"
            patch = status_patch("queued", "Queued", message, obj, queuePosition=position)
            if self._patch_if_changed(obj, patch):
                self.kube.event(obj, NORMAL, "Queued", f"{message} (position {position})")
            return False
        try:
            credentials.check_source(meta["namespace"], spec, self.settings.upload_bucket)
        except credentials.SourceNotAllowed as exc:
            self._finish_failed(obj, "SourceNotAllowed", str(exc))
            return True
        uid = meta["uid"]
        with self._slots:  # one decision at a time, or two could take the last slot
            if not self._take_slot(obj):
                return False
            if self.queues is not None:
                self.queues.reserve(uid)
        # The slow part (MinIO's STS, the catalog's sequence, the Secret, the Job) outside
        # the slot lock: starts in different catalogs overlap; only the decisions queue.
        try:
            return self._start(obj, spec)
        finally:
            if self.queues is not None:
                self.queues.release(uid)  # a no-op once started() has taken the slot

    def _take_slot(self, obj: dict[str, Any]) -> bool:
        """Whether the catalog's head may start under the running limits (with the
        watch-fed queues; without them there is no view of the whole cluster); if not,
        its status says why it waits."""
        if self.queues is None:
            return True
        why = self.queues.slot_for(
            Waiting.of(obj, has_job=False),
            self.settings.max_running_imports,
            self.settings.max_running_imports_per_namespace,
        )
        if why is None:
            return True
        # Its place among the slot waiters is refresh_positions' to write (it needs the
        # whole cluster's order); a place in its catalog's queue no longer applies.
        status = obj.get("status") or {}
        position = status.get("queuePosition") if status.get("reason") == "WaitingForSlot" else None
        patch = status_patch("queued", "WaitingForSlot", why, obj, queuePosition=position)
        if self._patch_if_changed(obj, patch):
            self.kube.event(obj, NORMAL, "WaitingForSlot", why)
        return False

    def refresh_positions(self) -> int:
        """Bring status.queuePosition up to date from the queues in memory, front first,
        at most `queue_position_updates` writes per call (the periodic resync): waiting
        stays cheap however long the queues grow. Positions only ever fall (an import
        never overtakes one created before it in its catalog), so one not refreshed yet
        is an upper bound. Returns how many it wrote.

        Each write is one call, conditional on the version the watch last showed: no
        read first, and no catalog lock, so a long queue's refresh never holds up the
        pass that starts its next import. An import that changed since (it started, or
        was cancelled) is left alone; the next refresh sees its new version."""
        if self.queues is None:
            return 0
        written = 0
        for waiting, position in self.queues.positions(
            self.settings.max_running_imports, self.settings.max_running_imports_per_namespace
        ):
            if written >= self.settings.queue_position_updates:
                break
            if waiting.position == position or waiting.busy:
                continue
            updated = self.kube.set_queue_position(
                waiting.namespace, waiting.name, waiting.version, position
            )
            if updated is not None:
                written += 1
                self.queues.observe(updated)
        return written

    def _start(self, obj: dict[str, Any], spec: ProductImportSpec) -> bool:
        meta = obj["metadata"]
        self._wait_to_create(obj, spec)
        try:
            # Credentials first: while MinIO is down, the status names MinIO (its STS),
            # not the catalog table the sequence is read from.
            self._loader_credentials(obj, spec, job_name(obj))
            obj = self._admit(obj, spec)
        except TemporaryFailure as exc:
            # No Job without its credentials: say why it waits; reconcile() retries, and
            # fails the import after store_retry_seconds.
            message = f"cannot start the import yet: {exc}"
            self._patch_if_changed(obj, status_patch("queued", "WaitingForStore", message, obj))
            raise
        job = build_job(obj, self.settings, steps(obj)[0])
        try:
            created = self.kube.create_job(job)
        except JobRefused as exc:
            return self._job_refused(obj, job["metadata"]["name"], exc)
        self._create_failures.pop(meta["uid"], None)
        if self.queues is not None:
            self.queues.started(meta["uid"])  # it holds a running slot from now
        name = job["metadata"]["name"]
        if created:
            self.kube.event(obj, NORMAL, "JobCreated", f"created Job {name}")
            since = _parse_time(meta.get("creationTimestamp"))
            if since and not (obj.get("status") or {}).get("phase"):
                metrics.apply_to_job.observe((datetime.now(UTC) - since).total_seconds())
        status = status_patch(
            "running", "JobCreated", f"Job {name} created; waiting for the loader to start", obj,
            jobName=name, attempts=0, queuePosition=None,
            startTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )  # fmt: skip
        self._patch_if_changed(obj, status)
        return False

    def _wait_to_create(self, obj: dict[str, Any], spec: ProductImportSpec) -> None:
        """Raises _TryAgain while the import's Job may not be created yet: in the back-off
        after the API server refused it, or while a loader Pod of the catalog is alive
        (terminating after a cancel or a deleted Job, or left running by `kubectl delete
        job --cascade=orphan`): a second loader must never run beside it."""
        failing = self._create_failures.get(obj["metadata"]["uid"])
        if failing is not None and self._clock() < failing.next_at:
            raise _TryAgain(f"the Job is created again in {failing.next_at - self._clock():.0f}s")
        alive = _alive(self.kube.catalog_pods(obj["metadata"]["namespace"], spec.catalog))
        if alive:
            message = (
                f"waiting for the loader Pod {', '.join(alive)} of catalog {spec.catalog!r} "
                "to end: one loader of a catalog runs at a time"
            )
            patch = status_patch("queued", "WaitingForLoader", message, obj, queuePosition=None)
            if self._patch_if_changed(obj, patch):
                self.kube.event(obj, NORMAL, "WaitingForLoader", message)
            raise _TryAgain(message)

    def _job_refused(self, obj: dict[str, Any], name: str, refused: JobRefused) -> bool:
        """The API server refused the Job: created again with exponential back-off, the
        status saying why, until job_create_retry_seconds have passed since the first
        refusal; then the import fails (JobCreateFailed) and its catalog moves on."""
        uid, now = obj["metadata"]["uid"], self._clock()
        failing = self._create_failures.setdefault(uid, _CreateFailures(since=now))
        failing.attempts += 1
        tried = now - failing.since
        if tried >= self.settings.job_create_retry_seconds:
            self._finish_failed(
                obj, "JobCreateFailed",
                f"could not create the Job {name} in {failing.attempts} attempts over "
                f"{tried:.0f}s: {refused}",
            )  # fmt: skip
            return True
        delay = min(
            self.settings.job_create_backoff_seconds * 2 ** (failing.attempts - 1),
            self.settings.job_create_backoff_max_seconds,
        )
        failing.next_at = now + delay
        message = (
            f"could not create the Job {name}: {refused} "
            f"(attempt {failing.attempts}, next in {delay:.0f}s)"
        )
        patch = status_patch("queued", "JobNotCreated", message, obj, queuePosition=None)
        if self._patch_if_changed(obj, patch):
            self.kube.event(obj, WARNING, "JobNotCreated", message)
        raise _TryAgain(message)

    def _admit(self, obj: dict[str, Any], spec: ProductImportSpec) -> dict[str, Any]:
        """The import's fencing sequence (annotation ANNOTATION_SEQUENCE), given as it
        takes its catalog, so sequences grow in the order imports run: one above every
        sequence the catalog has seen, on its imports and in its recent commits (its
        imports may have been deleted). Kept once given: a Job created again for the same
        import runs with the same number. Under the catalog's lock."""
        if sequence_of(obj) is not None:
            return obj
        meta = obj["metadata"]
        annotations = {**(meta.get("annotations") or {})}
        pods = self._merge_pods_for(spec)
        if pods > 1:  # before the sequence: an admitted import has its count for good
            self.kube.annotate_import(obj, ANNOTATION_MERGE_PODS, str(pods))
            annotations[ANNOTATION_MERGE_PODS] = str(pods)
        key = (meta["namespace"], spec.catalog)
        if self.queues is not None:
            # The catalog's imports from the watch (no LIST of a namespace that may hold
            # thousands), and the numbers this operator gave imports that have ended.
            waiting = self.queues.waiting(*key)
            taken = [w.sequence or 0 for w in waiting] + [self._issued.get(key, 0)]
        else:
            imports = self.kube.list_imports(meta["namespace"])
            mine = [o for o in imports if (o.get("spec") or {}).get("catalog") == spec.catalog]
            taken = [sequence_of(o) or 0 for o in mine]
        catalog = Catalog(self.reports.store, meta["namespace"], spec.catalog)
        sequence = max([committed_sequence(catalog), *taken]) + 1
        self.kube.annotate_import(obj, ANNOTATION_SEQUENCE, str(sequence))
        self._issued[key] = sequence
        admitted = {**obj, "metadata": {**meta}}
        admitted["metadata"]["annotations"] = {**annotations, ANNOTATION_SEQUENCE: str(sequence)}
        return admitted

    def _merge_pods_for(self, spec: ProductImportSpec) -> int:
        """How many Pods merge the import (docs/scaling.md): spec.job.parallelism if set,
        else the operator's default for an object source at or above its threshold.
        A dry run is never split (its merge Pods would upload files it never commits)."""
        asked = spec.job.parallelism if spec.job else None
        if spec.dryRun:
            return 1
        if asked is not None:
            return asked
        source = spec.source.object
        if self.settings.parallelism <= 1 or source is None:
            return 1
        size = self.reports.source_size(source.bucket, source.key)
        threshold = self.settings.parallel_threshold_bytes
        return self.settings.parallelism if size is not None and size >= threshold else 1

    def _current_job(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The Job of the import's latest step that exists (a one-Pod import's only Job):
        one GET, three at most for a partitioned import."""
        namespace = obj["metadata"]["namespace"]
        for step in reversed(steps(obj)):
            job = self.kube.get_job(namespace, step_job_name(obj, step))
            if job is not None:
                return job
        return None

    def _next_step(
        self, obj: dict[str, Any], spec: ProductImportSpec, done: dict[str, Any], step: str
    ) -> bool:
        """A step of a partitioned import completed: create the next one's Job."""
        meta = obj["metadata"]
        if step == "prepare":
            # A prepare step that found the import already committed (exactly once) wrote
            # the import's result itself, and there is nothing left to do.
            result = self.reports.result(meta["namespace"], spec.catalog, meta["uid"])
            if result is not None and result.phase == "Succeeded":
                self._finish(
                    obj, result, jobName=done["metadata"]["name"], attempts=_attempts(done)
                )
                return True
        following = STEPS[STEPS.index(step) + 1]
        job = build_job(obj, self.settings, following)
        name = job["metadata"]["name"]
        try:
            created = self.kube.create_job(job)
        except JobRefused as exc:
            return self._job_refused(obj, name, exc)
        self._create_failures.pop(meta["uid"], None)
        what = (
            f"{merge_pods(obj)} Pods merge its buckets"
            if following == "merge"
            else "one Pod commits the merged buckets"
        )
        message = f"the {step} step completed; Job {name}: {what}"
        if created:
            self.kube.event(obj, NORMAL, "StepStarted", message)
        patch = status_patch("running", "JobCreated", message, obj, jobName=name, attempts=0)
        self._patch_if_changed(obj, patch)
        return False

    def _loader_credentials(self, obj: dict[str, Any], spec: ProductImportSpec, name: str) -> None:
        """The Job's own MinIO credentials, scoped to its source and catalog, in a Secret
        named as the Job and owned by the import."""
        namespace = obj["metadata"]["namespace"]
        # The loader cannot create buckets with these credentials: the operator makes the
        # catalog bucket (once per process; the store remembers it checked) and the
        # bucket of the catalog's Delta table.
        self.reports.store.ensure_bucket()
        # The catalog's keys exactly as the loader names them (same Catalog, same store).
        catalog = Catalog(self.reports.store, namespace, spec.catalog)
        catalog.table.ensure_bucket()
        src = spec.source.object
        data = self.loader_credentials(
            catalog.ref("*"), f"s3://{src.bucket}/{src.key}" if src else None, catalog.table_ref
        )
        self.kube.put_secret(namespace, name, data, owner=obj)
        # Versions before this one left the operator's own keys here: take them away.
        self.kube.delete_secret(namespace, LEGACY_SHARED_SECRET)

    def _start_next(self, namespace: str, catalog: str) -> None:
        """The catalog and a running slot are free: give them to the next imports now,
        not at their next poll (the catalog's next import, then whichever catalogs the
        running limit lets start, in their fair order)."""
        with self._lock(namespace, catalog):
            holder, _ = self._holder(namespace, catalog)
        nexts = [(namespace, holder.name)] if holder is not None else []
        if self.queues is not None:
            nexts += [
                (w.namespace, w.name)
                for w in self.queues.next_to_start(
                    self.settings.max_running_imports,
                    self.settings.max_running_imports_per_namespace,
                )
            ]
        for next_namespace, name in dict.fromkeys(nexts):
            try:
                self.reconcile(next_namespace, name)
            except TemporaryFailure as exc:
                # Not this import's failure (it has ended): the next one waits for the
                # store, and its own handler or the periodic resync tries again.
                log.warning("cannot start %s/%s yet: %s", next_namespace, name, exc)

    # -- running ------------------------------------------------------------------------

    def _running(self, obj: dict[str, Any], spec: ProductImportSpec, job: dict[str, Any]) -> bool:
        """Copy the loader's progress into the status; returns whether the import ended
        here instead (its Pod cannot start, so the Job would wait forever)."""
        meta = obj["metadata"]
        job_status = job.get("status") or {}
        attempts = _attempts(job)
        try:
            progress = self.reports.progress(meta["namespace"], spec.catalog, meta["uid"])
        except TemporaryFailure:
            progress = None  # progress is a courtesy; the Job's own state still counts
        # A later step of a partitioned import finds the earlier steps' progress: its own
        # Pods are watched until one of them has started (merge Pods waiting for room
        # while others run are not stuck).
        later_step = merge_pods(obj) > 1 and step_of(obj, job) != steps(obj)[0]
        if not progress or later_step:
            pods = self.kube.job_pods(meta["namespace"], job["metadata"]["name"])
            timeout = self.settings.pending_timeout_seconds
            started = any(
                (p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in pods
            )
            stuck = (
                None
                if started
                else _cannot_start(pods, self.settings.image_pull_grace_seconds, timeout)
            )
            stuck = stuck or _no_pod(job, pods, timeout)
            if stuck is not None:
                # Deleted first, so no later retry can start a loader for an import that
                # is already reported as failed.
                self.kube.delete_job(meta["namespace"], job["metadata"]["name"])
                self._finish_failed(obj, *stuck, jobName=job["metadata"]["name"], attempts=attempts)
                return True
        previous = obj.get("status") or {}
        if job_status.get("active") or progress:
            reason, message = "JobRunning", "importing"
            if progress:
                rows = progress.get("rowsRead")
                message = f"{progress.get('stage', 'importing')}" + (
                    f": {rows:,} rows read" if rows is not None else ""
                )
        else:
            reason, message = "JobCreated", f"Job {job['metadata']['name']} is starting"
        if merge_pods(obj) > 1:  # a partitioned import: which of its steps
            step = step_of(obj, job)
            pods = f" ({merge_pods(obj)} Pods)" if step == "merge" else ""
            message = f"{step} step{pods}: {message}"
        if job_status.get("failed"):
            message += f" (attempt {attempts}; {job_status['failed']} failed before)"
        fields: dict[str, Any] = {"jobName": job["metadata"]["name"], "attempts": attempts}
        if progress:
            fields["progress"] = progress
        fields["startTime"] = previous.get("startTime") or job_status.get("startTime")
        self._patch_if_changed(obj, status_patch("running", reason, message, obj, **fields))
        if previous.get("reason") != "JobRunning" and reason == "JobRunning":
            self.kube.event(obj, NORMAL, "ImportStarted", f"the loader is running: {message}")
        return False

    def _patch_if_changed(self, obj: dict[str, Any], patch: dict[str, Any]) -> bool:
        before = obj.get("status") or {}
        after = patch["status"]
        if all(before.get(k) == v for k, v in after.items()):
            return False
        self.kube.patch_status(obj, patch)
        return True

    # -- terminal -----------------------------------------------------------------------

    def _job_failure(self, job: dict[str, Any], condition: dict[str, Any]) -> tuple[str, str]:
        """Why a Job failed without a result document: mostly infrastructure."""
        reason = condition.get("reason") or "JobFailed"
        message = condition.get("message") or "the import Job failed"
        pods = self.kube.job_pods(job["metadata"]["namespace"], job["metadata"]["name"])
        terminated = [
            (cs.get("state") or {}).get("terminated") or {}
            for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
        ]
        last = next((t for t in reversed(terminated) if t), None)
        evicted = _disk_eviction(pods)
        if evicted:
            reason = "DiskLimitExceeded"
            message = (
                f"the loader was evicted: {evicted} Raise "
                "spec.job.resources.limits.ephemeral-storage (the Job's /tmp holds the "
                "download, its decompressed copy and DuckDB's spill files)"
            )
        elif last:
            code = last.get("exitCode")
            tail = (last.get("message") or "").strip().splitlines()[-3:]
            detail = f"; last attempt exited with code {code}" + (
                f": {' '.join(tail)[:500]}" if tail else ""
            )
            loader = _loader_result(last.get("message") or "")
            if loader is not None:
                # The loader said why on stdout (--json) even where it wrote no result
                # document (a temporary failure): SourceUnreachable, StoreUnavailable, ...
                reason = loader.reason
                message = f"{loader.message} (after {_attempts(job)} attempts)"
            elif last.get("reason") == "OOMKilled":
                reason = "OutOfMemory"
                message = (
                    "the loader was killed at its container's memory limit; raise "
                    "spec.job.resources.limits.memory (about twice spec.job.memoryLimit, "
                    f"DuckDB's own limit){detail}"
                )
            elif code == EXIT_TEMPORARY:
                reason = "StoreUnavailable"
                message = f"a temporary failure outlasted the Job's retries{detail}"
            else:
                message += detail
        return reason, message

    def _finish(self, obj: dict[str, Any], result: ImportResult, **extra: Any) -> None:
        state = "succeeded" if result.phase == "Succeeded" else "failed"
        fields: dict[str, Any] = {
            "counts": result.counts.model_dump(),
            "catalogVersion": result.catalogVersion,
            "errorsRef": result.errorsRef,
            "errors": [
                e.model_dump(exclude_none=True)
                for e in result.errors[: self.settings.inline_errors]
            ],
            "completionTime": (result.completedAt or datetime.now(UTC)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "progress": {"stage": "done", "rowsRead": result.counts.rows},
            **extra,
        }
        self._terminal(obj, state, result.reason, result.message, fields)
        for outcome, value in result.counts.model_dump().items():
            if outcome != "rows":
                metrics.rows.labels(outcome).inc(value)

    def _finish_failed(self, obj: dict[str, Any], reason: str, message: str, **extra: Any) -> None:
        fields = {"completionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
        self._terminal(obj, "failed", reason, message, fields)

    def _discard_steps(self, obj: dict[str, Any]) -> None:
        """A partitioned import's split file and plan: gigabytes nobody reads any more
        (retention would take them only with the import's report)."""
        meta = obj["metadata"]
        try:
            self.reports.discard_steps(meta["namespace"], obj["spec"]["catalog"], meta["uid"])
        except ImportFailure as exc:
            log.warning("cannot delete the steps' documents of %s/%s yet: %s",
                        meta["namespace"], meta["name"], exc)  # fmt: skip

    def _terminal(
        self, obj: dict[str, Any], state: str, reason: str, message: str, fields: dict[str, Any]
    ) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        patch = status_patch(state, reason, message, obj, **fields)
        if "progress" not in fields:
            patch["status"]["progress"] = None  # a merge patch removes the stale progress
        patch["status"]["queuePosition"] = None  # an ended import waits for nothing
        self.kube.patch_status(obj, patch)
        status = patch["status"]
        phase = phase_of(status["conditions"])
        ok = phase == Phase.Succeeded
        self.kube.event(
            obj, NORMAL if ok else WARNING,
            "ImportSucceeded" if ok else "ImportFailed",
            message if ok else f"{reason}: {message}",
        )  # fmt: skip
        metrics.imports_finished.labels(phase.value, reason).inc()
        started = _parse_time((obj.get("status") or {}).get("startTime"))
        if started:
            metrics.import_duration.observe((datetime.now(UTC) - started).total_seconds())
        self._missing_results.pop(obj["metadata"]["uid"], None)
        self._create_failures.pop(obj["metadata"]["uid"], None)
        # The loader is done with its credentials (a Job that is still running was
        # deleted before a terminal status was written).
        self.kube.delete_secret(obj["metadata"]["namespace"], job_name(obj))
        if merge_pods(obj) > 1:
            self._discard_steps(obj)
        webhook = ((obj.get("spec") or {}).get("notify") or {}).get("webhook")
        if webhook:
            namespace = obj["metadata"]["namespace"]
            # The namespace's key, where its receivers' owners can read it to verify.
            self.kube.put_secret(namespace, SIGNING_SECRET, {"key": self.notifier.key(namespace)})
            self.notifier.submit(webhook, obj, status)
        address = ((obj.get("spec") or {}).get("notify") or {}).get("email")
        if address:
            self._mail(obj, status, address)
        log.info(
            "import %s/%s %s: %s", obj["metadata"]["namespace"], obj["metadata"]["name"],
            phase.value, message,
        )  # fmt: skip


def _disk_eviction(pods: list[dict[str, Any]]) -> str | None:
    """The kubelet's message when it evicted a loader for the disk it used (its /tmp over
    the sizeLimit, or the Pod over its ephemeral-storage limit); None otherwise. The
    container is SIGKILLed (exit 137) without a DisruptionTarget condition, so the
    Job's podFailurePolicy fails the Job at once, as it should: the same file fills the
    same disk again."""
    for pod in reversed(sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))):
        status = pod.get("status") or {}
        message = (status.get("message") or "").strip()
        if status.get("reason") == "Evicted" and ("EmptyDir" in message or "ephemeral" in message):
            return message
    return None
