"""The app factory: settings in, a FastAPI app out (tests build one per MinIO/cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from productimport.api import stale_uploads
from productimport.api.catalogread import CatalogReader
from productimport.api.context import install_request_id_records
from productimport.api.errors import install_error_handlers
from productimport.api.middleware import RequestContextMiddleware
from productimport.api.routes import catalog, native, ops, pcm, saas
from productimport.api.services import Services, build_services
from productimport.api.settings import ApiSettings
from productimport.api.storage import ensure_bucket

DESCRIPTION = """\
Upload product files; each upload becomes a `ProductImport` resource that the operator
runs. Three surfaces: the native API (`/api/v1`), the SaaS bulk-import compatible pair
(`/api/workspace/...`) and the Elastic Path PCM compatible routes (`/pcm/...`).
Every route needs `Authorization: Bearer <token>`. Responses carry `X-Request-ID`.
"""


def create_app(settings: ApiSettings | None = None, svc: Services | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    install_request_id_records()
    svc = svc or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Buckets may not exist yet on a fresh MinIO; the loader expects the catalog one.
        await anyio.to_thread.run_sync(ensure_bucket, svc.minio, settings.upload_bucket)
        # What an API that died mid-upload left: aborted before this one takes uploads.
        await anyio.to_thread.run_sync(
            stale_uploads.clean_up,
            svc.minio,
            settings.upload_bucket,
            settings.abort_incomplete_uploads_after_seconds,
        )
        yield
        svc.close()

    app = FastAPI(
        title="productimport upload API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.catalogs = CatalogReader(svc.minio, settings)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    for router in (native.router, catalog.router, saas.router, pcm.router, ops.router):
        app.include_router(router)
    return app
