"""The native API: /api/v1/namespaces/{namespace}/catalogs/{catalog}/..."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from productimport.api.auth import Principal
from productimport.api.errors import ApiError
from productimport.api.forms import NATIVE_BODY, NativeForm, parse_form
from productimport.api.formstream import Limits
from productimport.api.idempotency import IdempotencyKey, mark_replay
from productimport.api.reports import open_report
from productimport.api.security import Authorized, Svc, authorized
from productimport.api.services import Catalogs
from productimport.api.settings import ApiSettings
from productimport.api.storage import aiter_object
from productimport.api.uploads import UploadRequest, upload_and_create
from productimport.api.views import ImportView, view
from productimport.models.product import ImportCounts
from productimport.models.resource import ANNOTATION_CANCEL, LABEL_CATALOG

router = APIRouter(prefix="/api/v1", tags=["native"])

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=DNS_LABEL, max_length=63, description="tenant")]
Catalog = Annotated[str, Path(pattern=DNS_LABEL, max_length=63)]
ImportName = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
Sku = Annotated[str, Path(min_length=1, max_length=255)]
MAX_PRODUCT_PAGE = 1000


def path_namespace(params: Mapping[str, Any], principal: Principal, settings: ApiSettings) -> str:
    """The native routes act in the namespace their path names."""
    return params["namespace"]


MayCreate = Annotated[Authorized, Depends(authorized("create", path_namespace))]
MayList = Annotated[Authorized, Depends(authorized("list", path_namespace))]
MayGet = Annotated[Authorized, Depends(authorized("get", path_namespace))]
MayPatch = Annotated[Authorized, Depends(authorized("patch", path_namespace))]

# A cancel is a compare-and-swap on the resource; the operator writing status in
# between makes it retry with the fresh object, at most this many times.
CANCEL_ATTEMPTS = 5


class ImportAccepted(BaseModel):
    name: str
    namespace: str
    catalog: str
    uid: str
    phase: str
    statusUrl: str
    errorsUrl: str
    requestId: str | None = None
    notifyEmail: str | None = Field(
        None, description="where the outcome will be mailed (spec.notify.email), if asked"
    )
    notifyWebhook: str | None = Field(
        None, description="where the outcome will be posted (spec.notify.webhook), if asked"
    )


class ImportStatus(BaseModel):
    name: str
    namespace: str
    catalog: str
    uid: str
    phase: str = Field(description="Queued | Running | Succeeded | Failed | Cancelled")
    reason: str | None = None
    message: str | None = None
    dryRun: bool = False
    cancelRequested: bool = Field(
        default=False, description="a cancel was asked for; the operator ends it Cancelled"
    )
    counts: ImportCounts = Field(default_factory=ImportCounts)
    catalogVersion: int | None = None
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    progress: dict[str, Any] | None = None
    createdAt: str | None = None
    startTime: str | None = None
    completionTime: str | None = None
    statusUrl: str
    errorsUrl: str


class ImportList(BaseModel):
    items: list[ImportStatus]
    total: int
    limit: int
    offset: int


class ProductPage(BaseModel):
    catalogVersion: int
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def _urls(imp: ImportView) -> tuple[str, str]:
    base = f"/api/v1/namespaces/{imp.namespace}/catalogs/{imp.catalog}/imports/{imp.name}"
    return base, f"{base}/errors"


def status_of(imp: ImportView) -> ImportStatus:
    status_url, errors_url = _urls(imp)
    return ImportStatus(
        name=imp.name,
        namespace=imp.namespace,
        catalog=imp.catalog,
        uid=imp.uid,
        phase=imp.phase,
        reason=imp.reason,
        message=imp.message,
        dryRun=imp.dry_run,
        cancelRequested=imp.cancel_requested,
        counts=ImportCounts(
            **{k: v for k, v in imp.counts.items() if k in ImportCounts.model_fields}
        ),
        catalogVersion=imp.catalog_version,
        conditions=imp.conditions,
        progress=imp.progress,
        createdAt=imp.created,
        startTime=imp.started,
        completionTime=imp.completed,
        statusUrl=status_url,
        errorsUrl=errors_url,
    )


def _native_options(fields: dict[str, str]) -> UploadRequest:
    form = parse_form(NativeForm, fields)
    email = form.notifyEmail
    return UploadRequest(
        format=form.format,
        preset=form.preset,
        mode=form.mode,
        dry_run=form.dryRun,
        # No annotation for an upload that asks for no mail (as before these fields).
        notify_email=True if email is not None else None,
        notify_address=email if isinstance(email, str) else None,
        notify_field="notifyEmail",
        notify_webhook=form.notifyWebhook,
    )


@router.post(
    "/namespaces/{namespace}/catalogs/{catalog}/imports",
    status_code=202,
    response_model=ImportAccepted,
    openapi_extra=NATIVE_BODY,
    summary="Upload a product file and start an import",
    responses={
        400: {"description": "a malformed Idempotency-Key (`invalid_idempotency_key`)"},
        404: {"description": "the namespace does not exist"},
        413: {"description": "file over the size limit"},
        415: {},
        422: {
            "description": "a form field is invalid (a bad notifyEmail or notifyWebhook: "
            "`invalid`, `invalid_webhook`), mail was asked for where none is sent "
            "(`email_not_configured`) or there is no address (`no_notify_address`), the "
            "content is not the declared format, or the Idempotency-Key was used for "
            "another request (`idempotency_key_reused`)"
        },
        503: {"description": "the cluster did not say whether the import was created"},
    },
)
async def create_import(
    request: Request,
    response: Response,
    namespace: Namespace,
    catalog: Catalog,
    access: MayCreate,
    svc: Svc,
    idempotency_key: IdempotencyKey = None,
) -> ImportAccepted:
    await svc.imports.namespaces.require(
        namespace, f"namespace {namespace!r} does not exist", code="not_found"
    )
    limits = Limits(svc.settings.max_upload_bytes, max_drain=svc.settings.max_drain_bytes)
    accepted = await upload_and_create(
        svc,
        request,
        access.principal,
        namespace=namespace,
        catalog=catalog,
        api="native",
        limits=limits,
        read_options=_native_options,
        idempotency_key=idempotency_key,
    )
    mark_replay(response, accepted.replayed)
    obj = accepted.obj
    imp = view(obj)
    status_url, errors_url = _urls(imp)
    notify = obj["spec"].get("notify") or {}
    return ImportAccepted(
        name=imp.name,
        namespace=namespace,
        catalog=catalog,
        uid=imp.uid,
        phase=imp.phase,
        statusUrl=status_url,
        errorsUrl=errors_url,
        requestId=imp.request_id,
        notifyEmail=notify.get("email"),
        notifyWebhook=notify.get("webhook"),
    )


@router.get(
    "/namespaces/{namespace}/catalogs/{catalog}/imports",
    response_model=ImportList,
    summary="List a catalog's imports, newest first",
)
async def list_imports(
    namespace: Namespace,
    catalog: Catalog,
    access: MayList,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ImportList:
    objs = await svc.imports.list(namespace, f"{LABEL_CATALOG}={catalog}")
    items = [status_of(view(o)) for o in objs[offset : offset + limit]]
    return ImportList(items=items, total=len(objs), limit=limit, offset=offset)


def _in_catalog(imp: ImportView, catalog: str, name: str) -> ImportView:
    if imp.catalog != catalog:
        raise ApiError(404, f"import {name!r} not found in catalog {catalog!r}", code="not_found")
    return imp


async def _get_import(svc: Svc, namespace: str, catalog: str, name: str) -> ImportView:
    return _in_catalog(view(await svc.imports.get(namespace, name)), catalog, name)


@router.get(
    "/namespaces/{namespace}/catalogs/{catalog}/imports/{name}",
    response_model=ImportStatus,
    summary="An import's phase, conditions, counts and timestamps",
)
async def get_import(
    namespace: Namespace, catalog: Catalog, name: ImportName, access: MayGet, svc: Svc
) -> ImportStatus:
    return status_of(await _get_import(svc, namespace, catalog, name))


@router.post(
    "/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/cancel",
    status_code=202,
    response_model=ImportStatus,
    summary="Cancel a queued or running import",
    description="Asks the operator to cancel the import: a queued one never starts, a "
    "running one has its Job deleted; either ends Cancelled. 202 with the import as "
    "`GET .../imports/{name}` shows it (`cancelRequested: true`), also when a cancel "
    "was already asked for; 409 once the import is final.",
    responses={
        404: {"description": "no such import in this catalog"},
        409: {"description": "the import is final (Succeeded, Failed or Cancelled)"},
    },
)
async def cancel_import(
    namespace: Namespace, catalog: Catalog, name: ImportName, access: MayPatch, svc: Svc
) -> ImportStatus:
    for _ in range(CANCEL_ATTEMPTS):
        obj = await svc.imports.get(namespace, name)
        imp = _in_catalog(view(obj), catalog, name)
        if imp.terminal:
            raise ApiError(
                409,
                f"import {name!r} is {imp.phase}; only a queued or running import can be cancelled",
                code="already_final",
            )
        if imp.cancel_requested:
            return status_of(imp)
        try:
            patched = await svc.imports.annotate(
                namespace, name, {ANNOTATION_CANCEL: "true"}, obj["metadata"]["resourceVersion"]
            )
        except ApiError as exc:
            if exc.status == 409:
                continue  # it changed meanwhile (status written): decide again on the new one
            raise
        return status_of(view(patched))
    raise ApiError(
        409, f"import {name!r} kept changing while being cancelled; retry", code="conflict"
    )


@router.get(
    "/namespaces/{namespace}/catalogs/{catalog}/imports/{name}/errors",
    summary="The full row-level error report, streamed (CSV or JSON by Accept)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            }
        },
        409: {"description": "the import has not finished"},
        410: {"description": "the report has expired (retention)"},
    },
)
async def get_errors(
    request: Request,
    namespace: Namespace,
    catalog: Catalog,
    name: ImportName,
    access: MayGet,
    svc: Svc,
) -> StreamingResponse:
    imp = await _get_import(svc, namespace, catalog, name)
    accept = request.headers.get("accept", "")
    kind = "json" if "application/json" in accept and "text/csv" not in accept else "csv"
    media = "application/json" if kind == "json" else "text/csv; charset=utf-8"
    if not imp.terminal:
        raise ApiError(
            409, f"import {name!r} is {imp.phase}; the report comes at the end", code="not_finished"
        )
    response = await open_report(svc.minio, svc.settings, imp, kind)
    headers = {"Content-Disposition": f'attachment; filename="{name}-errors.{kind}"'}
    if response is None:
        if imp.errors_ref or imp.counts.get("rejected"):
            # The loader wrote one; retention has deleted it since (docs/operations.md).
            raise ApiError(
                410, f"import {name!r}'s error report has expired (the operator's retention "
                "deletes an import's documents a while after it ends)", code="report_expired",
            )  # fmt: skip
        # No report: the import had nothing to reject (or failed before reading rows).
        empty = b"[]" if kind == "json" else b"line,column,code,message,value\n"
        return StreamingResponse(iter([empty]), media_type=media, headers=headers)
    return StreamingResponse(aiter_object(response), media_type=media, headers=headers)


@router.get(
    "/namespaces/{namespace}/catalogs/{catalog}/products",
    response_model=ProductPage,
    summary="The catalog's current products, by SKU",
)
async def list_products(
    namespace: Namespace,
    catalog: Catalog,
    access: MayGet,
    reader: Catalogs,
    # A page is at most MAX_PRODUCT_PAGE products: one request's rows and JSON stay small.
    limit: Annotated[int, Query(ge=1, le=MAX_PRODUCT_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ProductPage:
    version, total, items = await reader.page(namespace, catalog, limit, offset)
    return ProductPage(catalogVersion=version, items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/namespaces/{namespace}/catalogs/{catalog}/products/{sku}",
    summary="One product of the catalog's current version",
)
async def get_product(
    namespace: Namespace,
    catalog: Catalog,
    sku: Sku,
    access: MayGet,
    reader: Catalogs,
) -> dict[str, Any]:
    product = await reader.get(namespace, catalog, sku)
    if product is None:
        raise ApiError(404, f"no product with sku {sku!r} in catalog {catalog!r}", code="not_found")
    return product
