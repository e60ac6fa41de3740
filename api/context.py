"""The request id: one per request, in every response header and every log line."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def new_request_id(incoming: str | None) -> str:
    """Keep a caller's id when it is harmless (so traces join up), else make one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return str(uuid.uuid4())


def current_request_id() -> str:
    return request_id_var.get()


_factory_installed = False


def install_request_id_records() -> None:
    """Stamp every log record, whoever handles it, with the current request id."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def configure_logging(level: str) -> None:
    install_request_id_records()
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers would print without the filter; route them through ours.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
