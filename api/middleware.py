"""Pure ASGI middleware: request id, access log, metrics, last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so request and response bodies stream through
untouched: an upload of gigabytes must never be buffered here.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from productimport.api.context import REQUEST_ID_HEADER, new_request_id, request_id_var
from productimport.api.errors import INTERNAL_ERROR_DETAIL, ApiError, error_body
from productimport.api.metrics import ApiMetrics

access_log = logging.getLogger("productimport.api.access")
log = logging.getLogger(__name__)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = new_request_id(incoming)
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                body = json.dumps(
                    error_body(scope["path"], ApiError(500, INTERNAL_ERROR_DETAIL))
                ).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(elapsed)
            access_log.info(
                "%s %s %s %d %.1fms",
                scope.get("client", ("-",))[0] if scope.get("client") else "-",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
            )
            request_id_var.reset(token)
