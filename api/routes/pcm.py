"""The Elastic Path PCM compatible routes (/pcm/...), as the seed and its published
OpenAPI document (../shared/seeds/elasticpath-pim-openapi.yaml) give them; the
deviations, each with its reason, are listed in docs/api.md.

There is no namespace in these paths: the token's home namespace is the store (a
static token's first namespace, a ServiceAccount's own namespace), else the configured
`pcm_namespace`; imports go to the configured `pcm_catalog` with the elasticpath preset.
Job ids are the ProductImport's UID. Errors use the JSON:API envelope (errors.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from productimport.api.auth import Principal
from productimport.api.errors import ApiError
from productimport.api.forms import PCM_BODY
from productimport.api.formstream import Limits
from productimport.api.idempotency import IdempotencyKey, mark_replay
from productimport.api.reports import Records, open_error_records
from productimport.api.security import Authorized, Svc, authorized
from productimport.api.settings import ApiSettings
from productimport.api.uploads import UploadRequest, upload_and_create
from productimport.api.views import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, ImportView, view
from productimport.models.resource import ANNOTATION_CANCEL

router = APIRouter(prefix="/pcm", tags=["elasticpath-compatible"])

JobID = Annotated[
    str, Path(min_length=1, max_length=64, description="A unique identifier for the job.")
]

_STATUS = {
    QUEUED: "pending",
    RUNNING: "started",
    SUCCEEDED: "success",
    FAILED: "failed",
    CANCELLED: "cancelled",
}

# What a refused upload answers here, as the seed says or implies (docs/api.md):
# - a file over the size limit: "503 client read error", the seed's words for it;
# - a body that is not multipart/form-data (elsewhere 415) or a form around the file
#   over its small limits (elsewhere 413): 400 Bad Request, the request cannot be read
#   as the form the route takes; the seed lists 400, 422 and 500 for this route;
# - file content that is not CSV (elsewhere 415): 422 Failed Validation (format_status).
CLIENT_READ_ERROR = "client read error"


def pcm_refusal(exc: ApiError) -> ApiError:
    if exc.code == "payload_too_large":
        return ApiError(
            503, exc.detail, code="client_read_error", title=CLIENT_READ_ERROR, headers=exc.headers
        )
    if exc.status in (413, 415):
        return ApiError(400, exc.detail, code=exc.code, headers=exc.headers)
    return exc


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad request. The request failed validation."},
    401: {"description": "Missing or invalid bearer token."},
    403: {"description": "The token may not act in this store."},
    404: {"description": "Bad Request. Not Found."},
    422: {"description": "Bad request. The request failed validation."},
    500: {"description": "Internal server error. There was a system failure in the platform."},
}


class JobAttributes(BaseModel):
    started_at: str | None = None
    completed_at: str | None = None
    created_at: str
    updated_at: str
    type: Literal["product-import"] = "product-import"
    status: Literal["pending", "cancelled", "started", "success", "failed"]


class JobMeta(BaseModel):
    x_request_id: str | None = None


class Job(BaseModel):
    id: str
    type: Literal["pim-job"] = "pim-job"
    attributes: JobAttributes
    meta: JobMeta


class Single(BaseModel):
    data: Job


class Results(BaseModel):
    total: int


class MultiMeta(BaseModel):
    results: Results


class Multi(BaseModel):
    data: list[Job]
    meta: MultiMeta


class JobErrorAttributes(BaseModel):
    message: str


class JobError(BaseModel):
    type: Literal["pim-job-error"] = "pim-job-error"
    id: str
    attributes: JobErrorAttributes


class JobErrors(BaseModel):
    data: list[JobError] = Field(default_factory=list)


def _status(imp: ImportView) -> str:
    if imp.cancel_requested and imp.phase == QUEUED:
        return "cancelled"
    return _STATUS.get(imp.phase, "pending")


def job_of(imp: ImportView) -> Job:
    created = imp.created or ""
    return Job(
        id=imp.uid,
        attributes=JobAttributes(
            started_at=imp.started,
            completed_at=imp.completed,
            created_at=created,
            updated_at=imp.updated or created,
            status=_status(imp),  # type: ignore[arg-type]
        ),
        meta=JobMeta(x_request_id=imp.request_id),
    )


def store_namespace(params: Mapping[str, Any], principal: Principal, settings: ApiSettings) -> str:
    """The store these routes act in: the token's home namespace, else the configured one."""
    return principal.home_namespace or settings.pcm_namespace


# The store is known before any job is looked up, so even the routes that find a job by
# id are authorized up front, in the store the lookup is confined to.
MayCreate = Annotated[Authorized, Depends(authorized("create", store_namespace))]
MayList = Annotated[Authorized, Depends(authorized("list", store_namespace))]
MayGet = Annotated[Authorized, Depends(authorized("get", store_namespace))]
MayPatch = Annotated[Authorized, Depends(authorized("patch", store_namespace))]


async def _find(svc: Svc, namespace: str, job_id: str) -> ImportView:
    return view(await svc.imports.find_by_uid(namespace, job_id))


def _pcm_options(fields: dict[str, str]) -> UploadRequest:
    # The seed's import takes a CSV and nothing else.
    return UploadRequest(format="csv", preset="elasticpath", mode="upsert")


@router.post(
    "/products/import",
    status_code=201,
    response_model=Single,
    openapi_extra=PCM_BODY,
    summary="Import Products",
    responses={
        **_ERROR_RESPONSES,
        503: {"description": "client read error: the file is over the size limit (50 MB)"},
    },
)
async def import_products(
    request: Request,
    response: Response,
    access: MayCreate,
    svc: Svc,
    idempotency_key: IdempotencyKey = None,
) -> Single:
    settings = svc.settings
    accepted = await upload_and_create(
        svc,
        request,
        access.principal,
        namespace=access.namespace,
        catalog=settings.pcm_catalog,
        api="pcm",
        limits=Limits(
            settings.pcm_max_bytes,
            max_rows=settings.pcm_max_rows,
            max_drain=settings.max_drain_bytes,
        ),
        read_options=_pcm_options,
        # The seed answers content problems with 422 Failed Validation (it has no 415).
        format_status={415: 422},
        refine_error=pcm_refusal,
        idempotency_key=idempotency_key,
    )
    mark_replay(response, accepted.replayed)
    return Single(data=job_of(view(accepted.obj)))


@router.get("/jobs", response_model=Multi, summary="Get All Jobs", responses=_ERROR_RESPONSES)
async def get_all_jobs(access: MayList, svc: Svc) -> Multi:
    jobs = [job_of(view(o)) for o in await svc.imports.list(access.namespace)]
    return Multi(data=jobs, meta=MultiMeta(results=Results(total=len(jobs))))


@router.get("/jobs/{jobID}", response_model=Single, summary="Get a Job", responses=_ERROR_RESPONSES)
async def get_job(jobID: JobID, access: MayGet, svc: Svc) -> Single:
    return Single(data=job_of(await _find(svc, access.namespace, jobID)))


# Tries at cancelling before a job that keeps changing is reported as no longer pending.
CANCEL_ATTEMPTS = 3


@router.post(
    "/jobs/{jobID}/cancel",
    response_model=Single,
    summary="Cancel a Job",
    description="Only jobs whose status is pending can be cancelled.",
    responses=_ERROR_RESPONSES,
)
async def cancel_job(jobID: JobID, access: MayPatch, svc: Svc) -> Single:
    imp = await _find(svc, access.namespace, jobID)
    # The operator writes the resource too (status, its own annotations): a conflict
    # only means "look again", and the job may well still be pending.
    for _ in range(CANCEL_ATTEMPTS):
        if imp.cancel_requested and imp.phase == QUEUED:
            return Single(data=job_of(imp))
        if imp.phase != QUEUED or imp.started:
            raise ApiError(
                422,
                f"job {jobID} is {_status(imp)}; only pending jobs can be cancelled",
                code="not_pending",
            )
        obj = await svc.imports.get(imp.namespace, imp.name)
        imp = view(obj)
        if imp.phase != QUEUED or imp.started:
            continue  # started meanwhile: say so above
        try:
            patched = await svc.imports.annotate(
                imp.namespace, imp.name, {ANNOTATION_CANCEL: "true"},
                obj["metadata"]["resourceVersion"],
            )  # fmt: skip
        except ApiError as exc:
            if exc.status != 409:
                raise
            imp = view(await svc.imports.get(imp.namespace, imp.name))
            continue
        return Single(data=job_of(view(patched)))
    raise ApiError(
        422,
        f"job {jobID} changed while cancelling; it is no longer pending",
        code="not_pending",
    )


def _message(record: dict[str, Any]) -> str:
    column = record.get("column")
    text = str(record.get("message") or record.get("code") or "invalid row")
    line = record.get("line")
    where = f"data.attributes.{column}: " if column else ""
    suffix = f" (line {line})" if line else ""
    return f"{where}{text}{suffix}"


# The report is streamed in pieces of about this size: one record at a time is read
# from MinIO and encoded, so memory does not grow with the report.
ERRORS_BATCH_BYTES = 64 * 1024


def _job_error(job_uuid: uuid.UUID, index: int, record: dict[str, Any]) -> JobError:
    return JobError(
        id=str(uuid.uuid5(job_uuid, str(index))),
        attributes=JobErrorAttributes(message=_message(record)),
    )


def _next_batch(records: Records, job_uuid: uuid.UUID) -> bytes:
    """`,{record},{record}...` for the next records, about ERRORS_BATCH_BYTES of them."""
    out = bytearray()
    for index, record in records:
        out += b","
        out += _job_error(job_uuid, index, record).model_dump_json().encode()
        if len(out) >= ERRORS_BATCH_BYTES:
            break
    return bytes(out)


async def _stream_job_errors(
    job_uuid: uuid.UUID, first: tuple[int, dict[str, Any]], records: Records
) -> AsyncIterator[bytes]:
    """`{"data":[...]}` exactly as the JobErrors model renders it, written as it is read."""
    try:
        yield b'{"data":[' + _job_error(job_uuid, *first).model_dump_json().encode()
        while batch := await anyio.to_thread.run_sync(_next_batch, records, job_uuid):
            yield batch
        yield b"]}"
    finally:
        records.close()  # releases the MinIO connection, also when the client goes away


@router.get(
    "/jobs/{jobID}/errors",
    response_model=JobErrors,
    summary="Get Job Errors",
    description="All of the job's errors in one document (the seed has no paging), "
    "streamed from the stored report as it is read.",
    responses=_ERROR_RESPONSES,
)
async def get_job_errors(jobID: JobID, access: MayGet, svc: Svc) -> Response:
    imp = await _find(svc, access.namespace, jobID)
    job_uuid = uuid.UUID(imp.uid) if _is_uuid(imp.uid) else uuid.NAMESPACE_URL
    if imp.terminal:
        records = await open_error_records(svc.minio, svc.settings, imp)
        first = await anyio.to_thread.run_sync(next, records, None)
        if first is not None:
            return StreamingResponse(
                _stream_job_errors(job_uuid, first, records), media_type="application/json"
            )
    data: list[JobError] = []
    if imp.phase == FAILED and imp.message:
        # A whole-file failure (unparseable, over the error policy) has no row records.
        data.append(
            JobError(
                id=str(uuid.uuid5(job_uuid, "failure")),
                attributes=JobErrorAttributes(message=imp.message),
            )
        )
    return JSONResponse(JobErrors(data=data).model_dump(mode="json"))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
