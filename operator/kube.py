"""The Kubernetes calls the reconciler makes, in one place (official client, synchronous).

`KubeApi` is the seam: everything the reconciler asks of the API server. `Kube` is the
real one; the decision tests (tests/operator/test_decisions.py) run the reconciler
against an in-memory one (tests/operator/memory_kube.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from productimport.models.events import event_body
from productimport.models.resource import GROUP, KIND, PLURAL, VERSION
from productimport.operator.jobs import LABEL_CATALOG, LABEL_MANAGED_BY, MANAGED_BY

COMPONENT = "productimport-operator"


class JobRefused(Exception):
    """The API server refused to create a Job: a ResourceQuota of the namespace, an
    admission policy or webhook, RBAC, an invalid object, or the server itself failing.
    `status` is the HTTP status, `message` the server's own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


def _refusal(exc: ApiException) -> JobRefused:
    """The API server's words from its Status body, else the HTTP reason."""
    try:
        message = json.loads(exc.body or "{}").get("message") or ""
    except ValueError:
        message = ""
    return JobRefused(int(exc.status or 0), message or str(exc.reason or "refused"))


def _catalog_selector(catalog: str) -> str:
    """The label selector of the operator's Jobs and loader Pods of one catalog."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CATALOG}={catalog}"


def _or_none(call, *args, none_on: tuple[int, ...] = (404,), **kwargs):
    try:
        return call(*args, **kwargs)
    except ApiException as exc:
        if exc.status in none_on:
            return None
        raise


class KubeApi(Protocol):
    """What the reconciler asks of the API server. Objects are plain dicts as the API
    serves them (camelCase), each a fresh copy; a missing object is None, never an error."""

    def get_import(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_imports(self, namespace: str) -> list[dict[str, Any]]: ...
    def patch_status(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of the status subresource (None removes a field)."""
        ...

    def set_queue_position(
        self, namespace: str, name: str, version: str, position: int
    ) -> dict[str, Any] | None:
        """Write status.queuePosition in one call, no read first, if the import is still
        at resourceVersion `version`; None if it changed since (it may have started) or
        is gone."""
        ...

    def annotate_import(self, obj: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
        """Set one annotation of a ProductImport (a merge patch of its metadata; the
        operator's own per-import state, such as its fencing sequence)."""
        ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, body: dict[str, Any]) -> bool:
        """False when a Job of that name already exists; JobRefused when the API server
        refuses it for any other reason."""
        ...

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job with its Pods, in the foreground: the Job stays, with a
        deletionTimestamp, until its Pods are gone (they get their grace period)."""
        ...

    def catalog_jobs(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        """The operator's Jobs labelled with this catalog."""
        ...

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]: ...
    def catalog_pods(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        """The operator's loader Pods labelled with this catalog, whatever became of
        their Jobs (one LIST)."""
        ...

    def put_secret(
        self, namespace: str, name: str, data: dict[str, str], owner: dict[str, Any] | None = None
    ) -> None: ...
    def delete_secret(self, namespace: str, name: str) -> None: ...
    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class Kube:
    """The real KubeApi: the official client against the API server."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)

    # -- ProductImports -----------------------------------------------------------------

    def get_import(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _or_none(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )

    def list_imports(self, namespace: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]

    def patch_status(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return _or_none(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
        )  # fmt: skip

    def set_queue_position(
        self, namespace: str, name: str, version: str, position: int
    ) -> dict[str, Any] | None:
        # A merge patch that names a resourceVersion is conditional on it (409 if not).
        patch = {"metadata": {"resourceVersion": version}, "status": {"queuePosition": position}}
        return _or_none(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, patch, none_on=(404, 409),
        )  # fmt: skip

    def annotate_import(self, obj: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return _or_none(
            self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"],
            {"metadata": {"annotations": {key: value}}},
        )  # fmt: skip

    # -- Jobs and their Pods ------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = _or_none(self.batch.read_namespaced_job, name, namespace)
        return self.api_client.sanitize_for_serialization(job) if job else None

    def create_job(self, body: dict[str, Any]) -> bool:
        """False when it already existed (a restarted operator, or a concurrent pass)."""
        try:
            self.batch.create_namespaced_job(body["metadata"]["namespace"], body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _refusal(exc) from exc

    def delete_job(self, namespace: str, name: str) -> None:
        _or_none(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Foreground")

    def catalog_jobs(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        selector = _catalog_selector(catalog)
        jobs = self.batch.list_namespaced_job(namespace, label_selector=selector).items
        return [self.api_client.sanitize_for_serialization(j) for j in jobs]

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return [self.api_client.sanitize_for_serialization(p) for p in pods]

    def catalog_pods(self, namespace: str, catalog: str) -> list[dict[str, Any]]:
        selector = _catalog_selector(catalog)
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.api_client.sanitize_for_serialization(p) for p in pods]

    # -- the loader's MinIO credentials -------------------------------------------------

    def put_secret(
        self, namespace: str, name: str, data: dict[str, str], owner: dict[str, Any] | None = None
    ) -> None:
        """Create (or replace) a Secret; owned by `owner`, it goes when the owner does."""
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        }
        if owner is not None:
            meta = owner["metadata"]
            owned_by = {"kind": KIND, "name": meta["name"], "uid": meta["uid"]}
            metadata["ownerReferences"] = [{"apiVersion": f"{GROUP}/{VERSION}", **owned_by}]
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata}
        body["stringData"] = data
        try:
            self.core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, namespace, body)

    def delete_secret(self, namespace: str, name: str) -> None:
        _or_none(self.core.delete_namespaced_secret, name, namespace)

    # -- Events -------------------------------------------------------------------------

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        involved = k8s.V1ObjectReference(
            api_version=f"{GROUP}/{VERSION}",
            kind=KIND,
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            resource_version=meta.get("resourceVersion"),
        )
        body = event_body(involved, type_, reason, message, COMPONENT)
        # An Event is worth a try, never a failed reconcile.
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(meta["namespace"], body)
