"""The SaaS-seed compatible pair (../shared/seeds/saas-bulk-import-products.txt).

A workspace is a namespace: `ws_abc123` -> namespace `ws-abc123` (Kubernetes names
cannot hold `_`; the prefix keeps tenants' namespaces recognisable). `catalog_id` names
the catalog inside it (default `main`). The job ids are the ProductImport's UID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from productimport.api.auth import Principal
from productimport.api.errors import ApiError
from productimport.api.forms import SAAS_BODY, SaasForm, parse_form
from productimport.api.formstream import Limits
from productimport.api.security import Authorized, Svc, authorized
from productimport.api.settings import ApiSettings
from productimport.api.uploads import UploadRequest, upload_and_create
from productimport.api.views import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, ImportView, view
from productimport.models.product import ImportCounts

router = APIRouter(prefix="/api/workspace", tags=["saas-compatible"])

WORKSPACE = r"^ws_[a-z0-9]+$"
Workspace = Annotated[str, Path(pattern=WORKSPACE, max_length=60, description="The workspace ID")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")]
CatalogId = Annotated[str | None, Query(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]

QUEUE = "ingest"
JOB_NAME = "product_import"

_STATUS = {
    QUEUED: "queued",
    RUNNING: "active",
    SUCCEEDED: "completed",
    FAILED: "failed",
    CANCELLED: "failed",
}


def workspace_namespace(workspace_id: str) -> str:
    return workspace_id.replace("_", "-")


def path_workspace(params: Mapping[str, Any], principal: Principal, settings: ApiSettings) -> str:
    """These routes act in the namespace of the workspace their path names."""
    return workspace_namespace(params["workspaceId"])


MayCreate = Annotated[Authorized, Depends(authorized("create", path_workspace))]
MayGet = Annotated[Authorized, Depends(authorized("get", path_workspace))]


class ImportEnqueued(BaseModel):
    """Field for field the seed's 202 answer."""

    jobId: str
    backgroundJobId: str
    queue: Literal["ingest", "catalog", "media"]
    jobName: str
    status: Literal["queued"]
    notify_email: bool


class JobResult(ImportCounts):
    catalogVersion: int | None = None


class JobStatus(BaseModel):
    id: str
    jobId: str
    backgroundJobId: str
    queue: str
    jobName: str
    status: Literal["queued", "active", "completed", "failed"]
    progress: dict[str, Any] | None = None
    result: JobResult | None = None
    error: str | None = None
    notify_email: bool = False
    workspaceId: str
    catalogId: str
    createdAt: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None


def job_status(workspace_id: str, imp: ImportView) -> JobStatus:
    status = _STATUS.get(imp.phase, "queued")
    result = None
    if imp.terminal:
        result = JobResult(
            catalogVersion=imp.catalog_version,
            **{k: v for k, v in imp.counts.items() if k in JobResult.model_fields},
        )
    return JobStatus(
        id=imp.uid,
        jobId=imp.uid,
        backgroundJobId=imp.uid,
        queue=QUEUE,
        jobName=JOB_NAME,
        status=status,  # type: ignore[arg-type]
        progress=imp.progress,
        result=result,
        error=imp.message if status == "failed" else None,
        notify_email=imp.annotations.get("catalog.productimport.dev/notify-email") == "true",
        workspaceId=workspace_id,
        catalogId=imp.catalog,
        createdAt=imp.created,
        startedAt=imp.started,
        finishedAt=imp.completed,
    )


@router.post(
    "/{workspaceId}/catalog/products/import",
    status_code=202,
    response_model=ImportEnqueued,
    openapi_extra=SAAS_BODY,
    summary="Bulk import products",
    description="Import job enqueued. Poll /api/workspace/{workspaceId}/jobs/{backgroundJobId}.",
)
async def bulk_import(
    request: Request,
    workspaceId: Workspace,
    access: MayCreate,
    svc: Svc,
    catalog_id: CatalogId = None,
) -> ImportEnqueued:
    notify: dict[str, bool] = {}

    def options(fields: dict[str, str]) -> UploadRequest:
        form = parse_form(SaasForm, fields)
        notify["email"] = form.notify_email
        return UploadRequest(format=form.format, notify_email=form.notify_email)

    obj = await upload_and_create(
        svc,
        request,
        access.principal,
        namespace=access.namespace,
        catalog=catalog_id or svc.settings.saas_default_catalog,
        api="saas",
        limits=Limits(svc.settings.max_upload_bytes, max_drain=svc.settings.max_drain_bytes),
        read_options=options,
    )
    uid = obj["metadata"]["uid"]
    return ImportEnqueued(
        jobId=uid,
        backgroundJobId=uid,
        queue=QUEUE,
        jobName=JOB_NAME,
        status="queued",
        notify_email=notify.get("email", False),
    )


@router.get(
    "/{workspaceId}/jobs/{backgroundJobId}",
    response_model=JobStatus,
    summary="Poll a background job: queued -> active -> completed | failed",
)
async def get_job(
    workspaceId: Workspace,
    backgroundJobId: JobId,
    access: MayGet,
    svc: Svc,
) -> JobStatus:
    try:
        obj = await svc.imports.find_by_uid(access.namespace, backgroundJobId.lower())
    except ApiError as exc:
        raise ApiError(404, f"job {backgroundJobId!r} not found", code="not_found") from exc
    return job_status(workspaceId, view(obj))
