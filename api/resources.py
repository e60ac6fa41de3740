"""ProductImport custom resources: create, read, list, annotate (the API never writes status).

The kubernetes client is synchronous; every call runs in a worker thread so the event
loop keeps streaming other uploads.
"""

from __future__ import annotations

from typing import Any

import anyio
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from productimport.api.errors import ApiError
from productimport.models.resource import GROUP, PLURAL, VERSION


def _translate(exc: ApiException, what: str) -> ApiError:
    if exc.status == 404:
        return ApiError(404, f"{what} not found", code="not_found")
    if exc.status == 422:
        return ApiError(422, f"the cluster rejected {what}: {exc.reason}", code="invalid")
    if exc.status == 409:
        return ApiError(409, f"{what}: conflict, retry", code="conflict")
    raise exc


class ProductImports:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._api = k8s.CustomObjectsApi(api_client)

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

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
            )
        except ApiException as exc:
            raise _translate(exc, f"import {name!r}") from exc

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
