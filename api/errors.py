"""One error type for the whole API and the envelopes it is rendered in.

The native and SaaS routes answer `{"error": {...}}`; the Elastic Path routes (`/pcm/`)
answer the JSON:API envelope of the seed: `{"errors": [{"status", "title", "detail",
"request_id"}]}` with the status as a string.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from productimport.api.context import current_request_id

PCM_PREFIX = "/pcm/"

# The titles the Elastic Path seed uses for its status codes.
_PCM_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Failed Validation",
    500: "Internal Server Error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title  # the /pcm/ envelope's title, when not the status's usual one
        self.code = code or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        self.headers = headers or {}
        self.meta = meta


def error_body(path: str, err: ApiError) -> dict[str, Any]:
    rid = current_request_id()
    if path.startswith(PCM_PREFIX):
        item: dict[str, Any] = {
            "status": str(err.status),
            "title": err.title or _PCM_TITLES.get(err.status, HTTPStatus(err.status).phrase),
            "detail": err.detail,
            "request_id": rid,
        }
        if err.meta:
            item["meta"] = err.meta
        return {"errors": [item]}
    body: dict[str, Any] = {
        "status": err.status,
        "code": err.code,
        "message": err.detail,
        "requestId": rid,
    }
    if err.meta:
        body["meta"] = err.meta
    return {"error": body}


def error_response(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, err), err.status, headers=err.headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",))
        parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


INTERNAL_ERROR_DETAIL = "There was an internal server error, you can report with your request id."


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err = ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return error_response(request, err)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, ApiError(422, _validation_detail(exc)))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
