"""An API server in dicts: the `KubeApi` seam (operator/kube.py) for the decision tests.

`MemoryKube` answers the reconciler's calls the way the API server does where the
reconciler depends on it: every read is a fresh copy, a missing object is None, a second
Job of one name is refused (create_job returns False), a status patch is a JSON merge
patch of the status subresource (None removes a field; generation does not move), and a
Job deleted in the background takes its Pods with it.

The other methods stand in for the rest of the cluster: `apply` and `annotate` are
kubectl, `run`, `complete`, `fail` and `add_pod` are the Job controller and the kubelet.
Imported as `memory_kube` (pytest puts this directory on sys.path, as for
imports_support).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from productimport.models.resource import GROUP, KIND, VERSION
from productimport.operator.jobs import LABEL_CATALOG, LABEL_MANAGED_BY, MANAGED_BY

Key = tuple[str, str]  # (namespace, name)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class MemoryKube:
    def __init__(self) -> None:
        self.imports: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.secrets: dict[Key, dict[str, Any]] = {}
        self.events: list[dict[str, str]] = []
        self.deleted_jobs: list[Key] = []
        # What the operator's watch would be told of each ProductImport change.
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        self._versions = itertools.count(1)
        # Creation times an hour ago, one second apart: `apply` order is creation order.
        self._created = (
            datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1) + timedelta(seconds=i)
            for i in itertools.count()
        )

    def _version(self) -> str:
        return str(next(self._versions))

    def _changed(self, obj: dict[str, Any]) -> None:
        for watcher in self.watchers:
            watcher(copy.deepcopy(obj))

    # -- the KubeApi seam ----------------------------------------------------------------

    def get_import(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.imports.get((namespace, name)))

    def list_imports(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.imports.items()) if ns == namespace]

    def patch_status(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        stored = self.imports.get((obj["metadata"]["namespace"], obj["metadata"]["name"]))
        if stored is None:
            return None
        assert set(patch) == {"status"}, f"the status subresource takes status only: {patch}"
        stored["status"] = merge_patch(stored.get("status"), patch["status"])
        stored["metadata"]["resourceVersion"] = self._version()
        self._changed(stored)
        return copy.deepcopy(stored)

    def set_queue_position(
        self, namespace: str, name: str, version: str, position: int
    ) -> dict[str, Any] | None:
        stored = self.imports.get((namespace, name))
        if stored is None or stored["metadata"]["resourceVersion"] != version:
            return None  # the API server's 404 and 409
        return self.patch_status(stored, {"status": {"queuePosition": position}})

    def annotate_import(self, obj: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
        meta = obj["metadata"]
        if (meta["namespace"], meta["name"]) not in self.imports:
            return None
        self.annotate(meta["namespace"], meta["name"], key, value)
        return self.get_import(meta["namespace"], meta["name"])

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get((namespace, name)))

    def create_job(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self.jobs:
            return False
        job = copy.deepcopy(body)
        job["metadata"].update(
            uid=str(uuid.uuid4()),
            creationTimestamp=stamp(datetime.now(UTC)),
            resourceVersion=self._version(),
        )
        job["status"] = {}
        self.jobs[key] = job
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        if self.jobs.pop((namespace, name), None) is not None:
            self.deleted_jobs.append((namespace, name))
        for key in [k for k, pod in self.pods.items() if self._pod_of(pod, namespace, name)]:
            del self.pods[key]

    def catalog_jobs(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        return self._of_catalog(self.jobs, namespace, catalog)

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(pod)
            for _, pod in sorted(self.pods.items())
            if self._pod_of(pod, namespace, job)
        ]

    def catalog_pods(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        return self._of_catalog(self.pods, namespace, catalog)

    @staticmethod
    def _of_catalog(
        objects: dict[Key, dict[str, Any]], namespace: str, catalog: str
    ) -> list[dict[str, Any]]:
        """The operator's objects labelled with the catalog (the label selector)."""
        wanted = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_CATALOG: catalog}
        return [
            copy.deepcopy(o)
            for (ns, _), o in sorted(objects.items())
            if ns == namespace and wanted.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def put_secret(
        self, namespace: str, name: str, data: dict[str, str], owner: dict[str, Any] | None = None
    ) -> None:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        }
        if owner is not None:
            meta = owner["metadata"]
            metadata["ownerReferences"] = [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ]
        self.secrets[(namespace, name)] = {"metadata": metadata, "stringData": dict(data)}

    def delete_secret(self, namespace: str, name: str) -> None:
        self.secrets.pop((namespace, name), None)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self.events.append(
            {
                "namespace": meta["namespace"],
                "name": meta["name"],
                "type": type_,
                "reason": reason,
                "message": message[:1024],
            }
        )

    # -- kubectl -------------------------------------------------------------------------

    def apply(
        self, namespace: str, name: str, spec: dict[str, Any], **metadata: Any
    ) -> dict[str, Any]:
        """A new ProductImport, created a second after the one applied before it."""
        obj = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": stamp(next(self._created)),
                "resourceVersion": self._version(),
                **metadata,
            },
            "spec": copy.deepcopy(spec),
        }
        self.imports[(namespace, name)] = obj
        self._changed(obj)
        return copy.deepcopy(obj)

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        meta = self.imports[(namespace, name)]["metadata"]
        meta.setdefault("annotations", {})[key] = value
        meta["resourceVersion"] = self._version()
        self._changed(self.imports[(namespace, name)])

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.imports[(namespace, name)].get("status") or {})

    def reasons(self, namespace: str, name: str) -> list[str]:
        """The reasons of the object's Events, oldest first."""
        return [
            e["reason"] for e in self.events if (e["namespace"], e["name"]) == (namespace, name)
        ]

    # -- the Job controller and the kubelet ----------------------------------------------

    def job_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job owned by the import `name`, if any."""
        uid = self.imports[(namespace, name)]["metadata"]["uid"]
        for (ns, _), job in sorted(self.jobs.items()):
            refs = job["metadata"].get("ownerReferences") or []
            if ns == namespace and any(r["uid"] == uid for r in refs):
                return copy.deepcopy(job)
        return None

    def add_pod(
        self,
        namespace: str,
        job: str,
        *,
        container: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None,
        age: timedelta = timedelta(seconds=1),
    ) -> str:
        """A Pod of the Job: `container` is the loader's containerStatuses `state`
        ({"running": ...}, {"waiting": ...}, {"terminated": ...}); `status` is merged
        into the Pod's status (reason, message of an eviction)."""
        name = f"{job}-{uuid.uuid4().hex[:5]}"
        pod_status: dict[str, Any] = {"phase": "Pending"}
        if container is not None:
            pod_status["containerStatuses"] = [{"name": "loader", "state": container}]
        pod_status.update(status or {})
        # The Job controller gives its Pods the template's labels (the catalog's) too.
        template = (self.jobs.get((namespace, job)) or {}).get("spec", {}).get("template", {})
        labels = {**(template.get("metadata") or {}).get("labels", {}), "job-name": job}
        self.pods[(namespace, name)] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": stamp(datetime.now(UTC) - age),
                "labels": labels,
            },
            "status": pod_status,
        }
        return name

    def run(self, namespace: str, job: str) -> None:
        """The loader's Pod is running."""
        running = {"running": {"startedAt": stamp(datetime.now(UTC))}}
        self.add_pod(namespace, job, container=running, status={"phase": "Running"})
        self._job_status(namespace, job, active=1, startTime=stamp(datetime.now(UTC)))

    def complete(self, namespace: str, job: str) -> None:
        condition = {"type": "Complete", "status": "True"}
        self._job_status(namespace, job, active=None, succeeded=1, conditions=[condition])
        self._pods_end(namespace, job, "Succeeded")

    def fail(
        self,
        namespace: str,
        job: str,
        reason: str = "BackoffLimitExceeded",
        message: str = "Job has reached the specified backoff limit",
        failed: int = 1,
    ) -> None:
        condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
        self._job_status(namespace, job, active=None, failed=failed, conditions=[condition])
        self._pods_end(namespace, job, "Failed")

    def _pods_end(self, namespace: str, job: str, phase: str) -> None:
        """A Job that has ended has no Pod still running."""
        for pod in self.pods.values():
            if self._pod_of(pod, namespace, job) and pod["status"]["phase"] not in (
                "Succeeded",
                "Failed",
            ):
                pod["status"]["phase"] = phase

    def _job_status(self, namespace: str, job: str, **status: Any) -> None:
        stored = self.jobs[(namespace, job)]
        stored["status"] = merge_patch(stored.get("status"), status)
        stored["metadata"]["resourceVersion"] = self._version()

    @staticmethod
    def _pod_of(pod: dict[str, Any], namespace: str, job: str) -> bool:
        meta = pod["metadata"]
        return meta["namespace"] == namespace and (meta.get("labels") or {}).get("job-name") == job
