"""A catalog's lifecycle on the native API: its versions, a rollback, an export
(/api/v1/namespaces/{namespace}/catalogs/{catalog}/versions, /rollback, /export)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from productimport.api import lifecycle
from productimport.api.lifecycle import ExportFormat, VersionView
from productimport.api.routes.native import Catalog, MayGet, MayList, MayPatch, Namespace
from productimport.api.security import Svc
from productimport.api.services import Catalogs

router = APIRouter(prefix="/api/v1", tags=["native"])

BASE = "/namespaces/{namespace}/catalogs/{catalog}"


class VersionList(BaseModel):
    items: list[VersionView]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="the version to restore, as GET .../versions lists it")


@router.get(
    f"{BASE}/versions",
    response_model=VersionList,
    summary="The catalog's versions, newest first, with the imports that made them",
)
async def list_versions(
    namespace: Namespace, catalog: Catalog, access: MayList, svc: Svc, reader: Catalogs
) -> VersionList:
    return VersionList(items=await lifecycle.list_versions(svc, reader, namespace, catalog))


@router.post(
    f"{BASE}/rollback",
    response_model=VersionView,
    summary="Make an earlier version's content current again, as a new version",
    description="A new version whose products are those of `version` (history is kept: "
    "the versions in between stay listed and can be rolled back to in turn). 200 with the "
    "new version as `GET .../versions` lists it; an Event `CatalogRolledBack` on the "
    "namespace names the versions and the caller.",
    responses={
        404: {"description": "the catalog has no such version (or no version at all)"},
        409: {"description": "an import of this catalog is running"},
    },
)
async def rollback(
    namespace: Namespace,
    catalog: Catalog,
    body: RollbackRequest,
    access: MayPatch,
    svc: Svc,
    reader: Catalogs,
) -> VersionView:
    return await lifecycle.rollback(svc, reader, access.principal, namespace, catalog, body.version)


@router.get(
    f"{BASE}/export",
    summary="A version's products, streamed as CSV (re-importable with preset=native) or Parquet",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string"}},
            }
        },
        404: {"description": "the catalog has no such version"},
    },
)
async def export(
    namespace: Namespace,
    catalog: Catalog,
    access: MayGet,
    svc: Svc,
    reader: Catalogs,
    fmt: Annotated[ExportFormat, Query(alias="format")] = "csv",
    version: Annotated[int | None, Query(ge=0, description="default: the current one")] = None,
) -> StreamingResponse:
    made = await lifecycle.export(svc, reader, namespace, catalog, fmt, version)
    filename = f"{catalog}-v{made.version}.{fmt}"
    return StreamingResponse(
        made.chunks(),
        media_type=made.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Catalog-Version": str(made.version),
        },
        # Also when the body was never started (the client went away first).
        background=BackgroundTask(made.remove),
    )
