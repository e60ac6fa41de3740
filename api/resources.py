"""ProductImport custom resources: create, read, list, annotate (the API never writes status).

The kubernetes client is synchronous; every call runs in a worker thread so the event
loop keeps streaming other uploads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from productimport.api.errors import ApiError
from productimport.models.events import event_body
from productimport.models.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

# How long a namespace seen to exist is taken to exist without asking again. Short: a
# namespace deleted meanwhile only delays the 404 to the ProductImport's creation.
NAMESPACE_TTL_SECONDS = 30.0
_NAMESPACE_CACHE_MAX = 4096


# Creating a ProductImport whose answer was lost: tries, and the pause before the second
# (doubled before each further one): 0.5 + 1 + 2 s in all.
CREATE_ATTEMPTS = 4
CREATE_BACKOFF_SECONDS = 0.5
# What the kubernetes client raises when no HTTP answer came back: a reset or closed
# connection, a timeout (urllib3's errors), or a socket error beneath them.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, OSError)


def _never_sent(exc: Exception) -> bool:
    """No connection to send the request on (refused, unresolvable, connect timeout,
    after urllib3's own retries): the API server never saw it."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


class CreateOutcomeUnknown(ApiError):
    """No definite answer to a create: the ProductImport may exist, so its source object
    must be kept."""


def _translate(exc: ApiException, what: str) -> ApiError:
    if exc.status == 404:
        return ApiError(404, f"{what} not found", code="not_found")
    if exc.status == 422:
        return ApiError(422, f"the cluster rejected {what}: {exc.reason}", code="invalid")
    if exc.status == 409:
        return ApiError(409, f"{what}: conflict, retry", code="conflict")
    raise exc


class Namespaces:
    """Whether a namespace exists, asked before an upload's body is read: one GET of the
    namespace, positive answers cached for NAMESPACE_TTL_SECONDS (absent ones never are,
    so a namespace created a moment ago is found at once).

    The API needs `get` on `namespaces` for this. Without it (401/403 from the cluster)
    the answer is "exists": the upload proceeds and creating the ProductImport in an
    absent namespace still fails with 404, as before this check (logged once).
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        ttl: float = NAMESPACE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._ttl = ttl
        self._clock = clock
        self._seen: dict[str, float] = {}  # name -> valid until (clock)
        self._warned = False

    async def read(self, name: str) -> k8s.V1Namespace | None:
        """The namespace as it is now; None when it does not exist. Where the API may not
        read namespaces (logged once), a namespace with no metadata of note: callers
        carry on as if it existed and said nothing."""
        try:
            return await anyio.to_thread.run_sync(lambda: self._core.read_namespace(name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status not in (401, 403):
                raise
            if not self._warned:
                self._warned = True
                log.warning(
                    "the API may not read namespaces (%s): an unknown workspace or "
                    "namespace is found only when its ProductImport is created, after the "
                    "upload, and no namespace's notify-email annotation is read; grant "
                    "`get` on `namespaces`",
                    exc.status,
                )
            return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))

    async def exists(self, name: str) -> bool:
        now = self._clock()
        if self._seen.get(name, 0.0) > now:
            return True
        ns = await self.read(name)
        if ns is None or (ns.status is not None and ns.status.phase == "Terminating"):
            # Absent, or being deleted: nothing new can be created in it.
            self._seen.pop(name, None)
            return False
        if len(self._seen) >= _NAMESPACE_CACHE_MAX:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if len(self._seen) >= _NAMESPACE_CACHE_MAX:
                self._seen.clear()
        self._seen[name] = now + self._ttl
        return True

    async def require(self, name: str, message: str, code: str) -> None:
        """404 (`message`, `code`) unless the namespace exists; asked before any of an
        upload's body is read. `Connection: close`: the body is not read, so the
        connection cannot carry another request (a client waiting for `100 Continue`
        never sends it)."""
        if not await self.exists(name):
            raise ApiError(404, message, code=code, headers={"Connection": "close"})


EVENT_COMPONENT = "productimport-api"


class NamespaceEvents:
    """Events about a namespace as a whole (a catalog lives in one, and is no resource of
    its own): `kubectl get events -n NS` shows them beside the ProductImports' Events.

    Like the operator's, an Event is worth a try, never a failed request: without the
    right to create Events (the API's ServiceAccount needs `create` on `events`) the
    refusal is logged once and the request succeeds.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._warned = False

    async def emit(self, namespace: str, type_: str, reason: str, message: str) -> None:
        # A cluster-scoped object's Events would belong in `default`; naming the
        # namespace as its own keeps them where the tenant looks (and may look).
        involved = k8s.V1ObjectReference(
            api_version="v1", kind="Namespace", name=namespace, namespace=namespace
        )
        body = event_body(involved, type_, reason, message, EVENT_COMPONENT)
        try:
            await anyio.to_thread.run_sync(
                lambda: self._core.create_namespaced_event(namespace, body)
            )
        except ApiException as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "could not create Event %s in namespace %s (%s %s: %s); the API needs "
                    "`create` on `events` to record catalog changes as Events",
                    reason,
                    namespace,
                    exc.status,
                    exc.reason,
                    (exc.body or "")[:300],
                )


class ProductImports:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._api = k8s.CustomObjectsApi(api_client)
        # Services holds this object only; the namespace check and the Events share its
        # kube client.
        self.namespaces = Namespaces(api_client)
        self.events = NamespaceEvents(api_client)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                # The namespace (tenant) does not exist, or the CRD is not installed.
                raise ApiError(
                    404, f"namespace {namespace!r} does not exist", code="not_found"
                ) from exc
            raise _translate(exc, "the ProductImport") from exc

    async def create_named(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create `body`, which names itself, and return the object of that name as the
        API server holds it afterwards: this one, or one that had the name already (the
        caller tells them apart). An answer that leaves the outcome unknown (connection
        reset, timeout, 5xx), or none at all (the API server unreachable, 429), is
        followed by the same create again: the name admits one object, so a create that
        did land before answers 409, and the object of that name is read. A refusal
        raises ApiError or the client's exception (nothing was created), as does a
        last attempt that was never sent when no earlier one may have landed; otherwise
        CreateOutcomeUnknown (it may exist)."""
        name = body["metadata"]["name"]
        unknown = False  # some attempt may have created it
        last: Exception | None = None
        delay = CREATE_BACKOFF_SECONDS
        for attempt in range(CREATE_ATTEMPTS):
            if attempt:
                await anyio.sleep(delay)
                delay *= 2
            try:
                return await self.create(namespace, body)
            except ApiError as exc:
                if exc.status != 409:
                    raise  # refused: not created, by this call or an earlier lost one
            except ApiException as exc:
                if exc.status < 500 and exc.status != 429:
                    raise  # refused (400, 401, 403): not created
                # 429 was not acted on; a 5xx (a gateway's, a timeout's) may have been.
                unknown = unknown or exc.status != 429
                last = exc
                log.warning("creating ProductImport %s/%s: %r", namespace, name, exc)
                continue
            except TRANSPORT_ERRORS as exc:
                unknown = unknown or not _never_sent(exc)
                last = exc
                log.warning("creating ProductImport %s/%s: %r", namespace, name, exc)
                continue
            # 409: the name is taken; by whom is what the object says.
            try:
                existing = await self.find(namespace, name)
            except (ApiException, *TRANSPORT_ERRORS) as exc:
                unknown, last = True, exc
                log.warning("reading ProductImport %s/%s: %r", namespace, name, exc)
                continue
            if existing is not None:
                return existing
            # Deleted between the two calls: create it again.
        if unknown:
            raise CreateOutcomeUnknown(
                503,
                "the Kubernetes API server did not answer whether the import was created; "
                "retry with the same Idempotency-Key to get it without uploading again",
                code="create_outcome_unknown",
            ) from last
        if last is None:  # 409 each time, and each time gone when read: keeps changing
            raise ApiError(409, f"the ProductImport {name!r}: conflict, retry", code="conflict")
        raise last  # known not created: answered as any other cluster failure

    async def find(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ProductImport, or None when it does not exist; errors other than 404 are
        raised as they are (the caller decides what an unknown answer means)."""
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj = await self.find(namespace, name)
        except ApiException as exc:
            raise _translate(exc, f"import {name!r}") from exc
        if obj is None:
            raise ApiError(404, f"import {name!r} not found", code="not_found")
        return obj

    async def list(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Every ProductImport in the namespace matching the selector, newest first."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs = {"label_selector": label_selector, "limit": 500, "_continue": token}
            try:
                page = await anyio.to_thread.run_sync(
                    lambda kw=kwargs: self._api.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, **kw
                    )
                )
            except ApiException as exc:
                if exc.status == 404:
                    return []
                raise
            items.extend(page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                break
        items.sort(
            key=lambda o: (
                o["metadata"].get("creationTimestamp", ""),
                o["metadata"].get("name", ""),
            ),
            reverse=True,
        )
        return items

    async def find_by_uid(
        self, namespace: str, uid: str, label_selector: str = ""
    ) -> dict[str, Any]:
        """The job ids of the seed routes are resource UIDs (the loader's import id);
        field selectors do not cover metadata.uid for custom resources, so list and match."""
        for obj in await self.list(namespace, label_selector):
            if obj["metadata"].get("uid") == uid:
                return obj
        raise ApiError(404, f"job {uid!r} not found", code="not_found")

    async def annotate(
        self, namespace: str, name: str, annotations: dict[str, str], resource_version: str
    ) -> dict[str, Any]:
        # resourceVersion makes this a compare-and-swap: a status change in between
        # (the operator started the Job) fails with 409 instead of being ignored.
        patch = {"metadata": {"annotations": annotations, "resourceVersion": resource_version}}
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._api.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, patch
                )
            )
        except ApiException as exc:
            raise _translate(exc, f"import {name!r}") from exc
