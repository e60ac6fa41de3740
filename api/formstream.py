"""Incremental multipart/form-data parsing straight from the request stream.

FastAPI's UploadFile would spool the whole file to a temporary file before the handler
runs. Here python-multipart's streaming parser runs over `request.stream()` and the
file part's bytes go to a sink (the MinIO multipart writer) as they arrive, so memory
stays bounded and the size limit is enforced while streaming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from productimport.api.errors import ApiError

FILE_FIELD = "file"
HEAD_BYTES = 64 * 1024  # kept in memory to check the declared format
MAX_FIELDS_BYTES = 64 * 1024  # all text fields together


class Sink(Protocol):
    async def write(self, data: bytes | memoryview) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_rows: int | None = None  # count CSV records (quote-aware) and stop above this
    max_drain: int = 64 * 1024 * 1024


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    head: bytes = b""
    rows: int | None = None


class RowCounter:
    """Counts CSV records (lines outside quotes), quote-aware, in C-speed bytes ops.

    A doubled quote inside a quoted field toggles twice, so the state stays right.
    """

    def __init__(self) -> None:
        self.newlines = 0
        self.in_quotes = False
        self.last = b""

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if b'"' not in data:
            if not self.in_quotes:
                self.newlines += data.count(b"\n")
        else:
            for i, segment in enumerate(data.split(b'"')):
                if i:
                    self.in_quotes = not self.in_quotes
                if not self.in_quotes:
                    self.newlines += segment.count(b"\n")
        self.last = data[-1:]

    @property
    def rows(self) -> int:
        return self.newlines + (1 if self.last not in (b"", b"\n") else 0)


def _boundary(request: Request) -> bytes:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data":
        raise ApiError(
            415,
            "send the file as multipart/form-data with the file in the field 'file'",
            code="unsupported_media_type",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data without a boundary", code="bad_request")
    return boundary


class _Collector:
    """Turns python-multipart's synchronous callbacks into a list of events that the
    async loop then applies (writes to the sink need `await`)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._headers: dict[str, bytes] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_header_field": lambda d, s, e: self._hname.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._hvalue.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("headers", dict(self._headers))),
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def _header_end(self) -> None:
        self._headers[bytes(self._hname).decode("latin-1").lower()] = bytes(self._hvalue)
        self._hname.clear()
        self._hvalue.clear()


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the file is larger than the limit of {limit} bytes; split it into smaller files",
        code="payload_too_large",
    )


async def _drain(stream: Any, budget: int) -> bool:
    """Read and drop the rest of the body so the client gets our answer rather than a
    reset connection. False when the body is longer than the budget."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > budget:
            return False
    return True


async def receive_upload(
    request: Request,
    limits: Limits,
    open_sink: Callable[[], Awaitable[Sink]],
) -> Upload:
    """Parse the form; the `file` field streams into the sink opened by `open_sink`.

    Raises ApiError (413 over the limits, 400/422 for a malformed form). The caller
    aborts the sink on any error.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes + limits.max_drain:
        # Far over the limit: answer now. curl waits for "100 Continue" on big bodies
        # (uvicorn sends it only when the body is read), so it sees this cleanly.
        raise _close(_too_large(limits.max_bytes))

    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())
    upload = Upload()
    counter = RowCounter() if limits.max_rows is not None else None
    head = bytearray()
    sink: Sink | None = None
    part: str | None = None  # "file", a field name, or "" for an ignored part
    field_value = bytearray()
    fields_bytes = 0
    stream = request.stream()
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(400, f"malformed multipart body: {exc}", code="bad_request") from exc
            for kind, value in collector.events:
                if kind == "headers":
                    part, filename, ctype = _part_info(value)
                    if part == FILE_FIELD:
                        if sink is not None:
                            raise ApiError(422, "send exactly one file per request", code="invalid")
                        upload.filename, upload.content_type = filename, ctype
                        sink = await open_sink()
                    field_value.clear()
                elif kind == "data":
                    if part == FILE_FIELD:
                        assert sink is not None
                        upload.size += len(value)
                        if upload.size > limits.max_bytes:
                            if not await _drain(stream, limits.max_drain):
                                raise _close(_too_large(limits.max_bytes))
                            raise _too_large(limits.max_bytes)
                        if len(head) < HEAD_BYTES:
                            head += value[: HEAD_BYTES - len(head)]
                        if counter is not None:
                            counter.feed(value)
                            if counter.rows > limits.max_rows:  # type: ignore[operator]
                                await _drain(stream, limits.max_drain)
                                raise ApiError(
                                    422,
                                    f"the file has more than {limits.max_rows} rows including "
                                    "the header; split it into smaller files",
                                    code="too_many_rows",
                                )
                        await sink.write(value)
                    elif part:
                        fields_bytes += len(value)
                        if fields_bytes > MAX_FIELDS_BYTES:
                            raise ApiError(422, "form fields are too large", code="invalid")
                        field_value += value
                elif kind == "end":
                    if part and part != FILE_FIELD:
                        upload.fields[part] = field_value.decode("utf-8", "replace")
                    part = None
            collector.events.clear()
        parser.finalize()
    except ClientDisconnect as exc:
        raise ApiError(
            400, "the client closed the connection mid-upload", code="bad_request"
        ) from exc
    if sink is None:
        raise ApiError(422, "the form has no file in the field 'file'", code="missing_file")
    upload.head = bytes(head)
    upload.rows = counter.rows if counter is not None else None
    return upload


def _close(err: ApiError) -> ApiError:
    err.headers["Connection"] = "close"
    return err


def _part_info(headers: dict[str, bytes]) -> tuple[str, str | None, str | None]:
    disposition, params = parse_options_header(headers.get("content-disposition"))
    if disposition != b"form-data":
        return "", None, None
    name = params.get(b"name", b"").decode("utf-8", "replace")
    raw_filename = params.get(b"filename")
    filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
    ctype = headers.get("content-type")
    return name, filename, ctype.decode("latin-1") if ctype else None
