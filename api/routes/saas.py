"""The SaaS-seed compatible pair (../shared/seeds/saas-bulk-import-products.txt).

A workspace is an existing namespace: the one the `workspaces` setting maps its id to,
else `ws_abc123` -> namespace `ws-abc123` (Kubernetes names cannot hold `_`; the prefix
keeps tenants' namespaces recognisable). Namespaces are never created here; an unknown
workspace is 404 before the upload's body is read. `catalog_id` names the catalog inside
it (default `main`); an id that is not a Kubernetes name (`Cat_1`) maps to one
(`catalog_name`). The job ids are the ProductImport's UID.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from productimport.api.auth import Principal
from productimport.api.errors import ApiError
from productimport.api.forms import SAAS_BODY, SaasForm, parse_form
from productimport.api.formstream import Limits
from productimport.api.idempotency import IdempotencyKey, mark_replay
from productimport.api.security import Authorized, Svc, authorized
from productimport.api.services import Services
from productimport.api.settings import ApiSettings
from productimport.api.uploads import UploadRequest, upload_and_create
from productimport.api.views import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, ImportView, view
from productimport.models.product import ImportCounts
from productimport.models.resource import ANNOTATION_NOTIFY_EMAIL, GROUP

router = APIRouter(prefix="/api/workspace", tags=["saas-compatible"])

WORKSPACE = r"^ws_[a-z0-9]+$"
Workspace = Annotated[str, Path(pattern=WORKSPACE, max_length=60, description="The workspace ID")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")]
# The seed's catalog_id is any string: printable, bounded (it is kept as an annotation).
CatalogId = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=253,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The catalog; an id that is not a Kubernetes name (`Cat_1`) is mapped "
        "to one (`cat-1-<hash>`) and kept as given in the job's `catalogId`.",
    ),
]
# The catalog id as the client sent it, on ProductImports whose catalog name differs.
ANNOTATION_CATALOG_ID = f"{GROUP}/saas-catalog-id"

QUEUE = "ingest"
JOB_NAME = "product_import"

_STATUS = {
    QUEUED: "queued",
    RUNNING: "active",
    SUCCEEDED: "completed",
    FAILED: "failed",
    CANCELLED: "failed",
}


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CATALOG_NAME_MAX = 63  # the catalog is a label value and part of object keys
_HASH_LEN = 8


def catalog_name(catalog_id: str) -> str:
    """The catalog name for a SaaS `catalog_id`: the id itself when it is a valid name,
    else lowercased, each run of other characters as one `-`, trimmed, cut to fit, plus
    `-` and 8 hex digits of the id's SHA-256 (so `Cat_1` and `cat-1` stay apart)."""
    if len(catalog_id) <= CATALOG_NAME_MAX and DNS_LABEL.match(catalog_id):
        return catalog_id
    digest = hashlib.sha256(catalog_id.encode()).hexdigest()[:_HASH_LEN]
    base = re.sub(r"[^a-z0-9]+", "-", catalog_id.lower()).strip("-")
    base = base[: CATALOG_NAME_MAX - _HASH_LEN - 1].rstrip("-") or "catalog"
    return f"{base}-{digest}"


def workspace_namespace(workspace_id: str, settings: ApiSettings) -> str:
    """The namespace a workspace is: the administrator's mapping, else its own id with
    `_` as `-` (a Kubernetes name cannot hold `_`)."""
    return settings.workspaces.get(workspace_id) or workspace_id.replace("_", "-")


def path_workspace(params: Mapping[str, Any], principal: Principal, settings: ApiSettings) -> str:
    """These routes act in the namespace of the workspace their path names."""
    return workspace_namespace(params["workspaceId"], settings)


async def require_workspace(svc: Services, workspace_id: str, namespace: str) -> None:
    """404 for a workspace whose namespace does not exist, before any of the body is
    read."""
    await svc.imports.namespaces.require(
        namespace, f"workspace {workspace_id!r} not found", code="workspace_not_found"
    )


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
        notify_email=imp.annotations.get(ANNOTATION_NOTIFY_EMAIL) == "true",
        workspaceId=workspace_id,
        catalogId=imp.annotations.get(ANNOTATION_CATALOG_ID) or imp.catalog,
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
    responses={
        400: {"description": "a malformed Idempotency-Key (`invalid_idempotency_key`)"},
        404: {"description": "unknown workspace (answered before the body is read)"},
        413: {"description": "file over the size limit"},
        415: {},
        422: {
            "description": "a form field is invalid, the content is not the declared "
            "format, or the Idempotency-Key was used for another request "
            "(`idempotency_key_reused`)"
        },
        503: {"description": "the cluster did not say whether the import was created"},
    },
)
async def bulk_import(
    request: Request,
    response: Response,
    workspaceId: Workspace,
    access: MayCreate,
    svc: Svc,
    catalog_id: CatalogId = None,
    idempotency_key: IdempotencyKey = None,
) -> ImportEnqueued:
    await require_workspace(svc, workspaceId, access.namespace)
    notify: dict[str, bool] = {}
    catalog = catalog_name(catalog_id) if catalog_id else svc.settings.saas_default_catalog
    extra = {ANNOTATION_CATALOG_ID: catalog_id} if catalog_id and catalog != catalog_id else {}

    def options(fields: dict[str, str]) -> UploadRequest:
        form = parse_form(SaasForm, fields)
        notify["email"] = form.notify_email
        return UploadRequest(
            format=form.format, notify_email=form.notify_email, extra_annotations=extra
        )

    accepted = await upload_and_create(
        svc,
        request,
        access.principal,
        namespace=access.namespace,
        catalog=catalog,
        api="saas",
        limits=Limits(svc.settings.max_upload_bytes, max_drain=svc.settings.max_drain_bytes),
        read_options=options,
        idempotency_key=idempotency_key,
    )
    mark_replay(response, accepted.replayed)
    uid = accepted.obj["metadata"]["uid"]
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
    responses={404: {"description": "unknown workspace or job"}},
)
async def get_job(
    workspaceId: Workspace,
    backgroundJobId: JobId,
    access: MayGet,
    svc: Svc,
) -> JobStatus:
    await require_workspace(svc, workspaceId, access.namespace)
    try:
        obj = await svc.imports.find_by_uid(access.namespace, backgroundJobId.lower())
    except ApiError as exc:
        raise ApiError(404, f"job {backgroundJobId!r} not found", code="not_found") from exc
    return job_status(workspaceId, view(obj))
