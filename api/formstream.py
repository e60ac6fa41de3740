"""Incremental multipart/form-data parsing straight from the request stream.

FastAPI's UploadFile would spool the whole file to a temporary file before the handler
runs. Here python-multipart's streaming parser runs over `request.stream()` and the
file part's bytes go to a sink (the MinIO multipart writer) as they arrive, so memory
stays bounded and the size limit is enforced while streaming.

Everything that is not the file's content (part headers, field names and values, parts
we ignore, bytes after the closing boundary) is counted as the parser hands it over, byte
by byte, against small fixed limits: the file has `max_bytes`, the rest of the form has
MAX_FORM_BYTES and at most MAX_PARTS parts. Counting only field values let a form of
empty fields with long names hold tens of megabytes of names in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from productimport.api.errors import ApiError

FILE_FIELD = "file"
HEAD_BYTES = 64 * 1024  # kept in memory to check the declared format
# The form around the file. Our forms have one file and at most a handful of short
# fields, so these are far above any honest client and far below a memory problem.
MAX_PARTS = 100
# One part's header names and values together: room for a 255-character non-Latin
# file name sent both as `filename` and percent-encoded as `filename*` (~3 KiB).
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_FIELD_NAME_BYTES = 1024
MAX_FORM_BYTES = 64 * 1024  # every byte of the body that is not the file's content
# python-multipart's own per-header limits, set above ours so that ours (which answer
# 413 with a precise message) trip first; theirs would surface as "malformed".
_PARSER_MAX_HEADER_SIZE = 2 * MAX_PART_HEADER_BYTES
_PARSER_MAX_HEADER_COUNT = 64

TRUNCATED = "the multipart body ended before its closing boundary"


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


@dataclass(frozen=True)
class PartInfo:
    name: str  # "file", a field name, or "" for a part we ignore
    filename: str | None
    content_type: str | None


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


GZIP_MAGIC = b"\x1f\x8b"
# A gzipped file's rows are counted in its decompressed text, at most this many
# decompressed bytes at a time: the counting holds this, never the decompressed file.
INFLATE_CHUNK = 1024 * 1024


class FileRowCounter:
    """The rows of an uploaded CSV as the importer will read them: a gzip-compressed file
    (it starts with the gzip magic) is decompressed incrementally with zlib, for counting
    only, and its text counted; the stored object stays the compressed upload.

    Concatenated gzip members are one stream (as gzip(1) reads them). Counting stops as
    soon as the rows pass `limit`, so a small file that inflates to gigabytes of rows is
    not decompressed to the end.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.counter = RowCounter()
        self.gzip: bool | None = None  # unknown until the file's first two bytes
        self._first = b""
        self._inflater: Any = None
        self._members = 0  # complete gzip members seen
        self._member_output = False  # the current member has inflated to something
        self._trailing = False  # the rest is trailing garbage after the last member

    @property
    def rows(self) -> int:
        return self.counter.rows

    @property
    def over(self) -> bool:
        return self.limit is not None and self.counter.rows > self.limit

    def feed(self, data: bytes) -> None:
        if self.gzip is None:
            data = self._first + bytes(data)
            if len(data) < len(GZIP_MAGIC):
                self._first = data
                return
            self._first = b""
            self.gzip = data.startswith(GZIP_MAGIC)
        if not self.gzip:
            self.counter.feed(data)
            return
        if self._trailing:
            return
        try:
            self._inflate(data)
        except zlib.error as exc:
            if self._members and self._inflater is not None and not self._member_output:
                # Bytes after a complete member that start no new one: trailing
                # garbage, which gzip readers ignore (gzip(1) warns); so do we.
                self._trailing = True
                return
            raise ApiError(
                422, f"the file is gzip-compressed but does not decompress: {exc}", code="invalid"
            ) from exc

    def _inflate(self, data: bytes) -> None:
        while data and not self.over:
            if self._inflater is None:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
                self._member_output = False
            inflater = self._inflater
            out = inflater.decompress(data, INFLATE_CHUNK)
            self._member_output = self._member_output or bool(out)
            self.counter.feed(out)
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            elif inflater.eof:
                # The member ended; whatever follows starts the next one.
                self._members += 1
                data = inflater.unused_data
                self._inflater = None
            else:
                data = b""

    def finish(self) -> None:
        """At the end of the file: a one-byte file was never decided; decide it now."""
        if self.gzip is None and self._first:
            self.gzip = False
            self.counter.feed(self._first)
            self._first = b""


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


def _form_too_large(detail: str, code: str) -> ApiError:
    return ApiError(413, detail, code=code)


class _Collector:
    """Turns python-multipart's synchronous callbacks into a list of events that the
    async loop then applies (writes to the sink need `await`).

    The limits on the form around the file are enforced here, inside the callbacks: the
    parser reports header bytes and part data as it scans each chunk (a header split
    over chunks arrives in pieces), so an oversized form is refused before its excess is
    held anywhere. A callback's ApiError propagates out of `parser.write`.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.parts = 0
        self.form_bytes = 0
        self.ended = False  # the closing boundary was seen
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._headers: dict[str, bytes] = {}
        self._part_header_bytes = 0
        self._in_file = False
        self._ignored = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_header_field": lambda d, s, e: self._header_bytes(self._hname, d, s, e),
            "on_header_value": lambda d, s, e: self._header_bytes(self._hvalue, d, s, e),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }

    def count_form(self, n: int) -> None:
        self.form_bytes += n
        if self.form_bytes > MAX_FORM_BYTES:
            raise _form_too_large(
                f"the form around the file (part headers, field names and values) is larger "
                f"than {MAX_FORM_BYTES} bytes",
                "form_too_large",
            )

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _form_too_large(
                f"the form has more than {MAX_PARTS} parts; send the file and only the "
                "documented fields",
                "too_many_parts",
            )
        self._headers = {}
        self._part_header_bytes = 0
        self._in_file = False
        self._ignored = False

    def _header_bytes(self, target: bytearray, data: bytes, start: int, end: int) -> None:
        n = end - start
        self._part_header_bytes += n
        if self._part_header_bytes > MAX_PART_HEADER_BYTES:
            raise _form_too_large(
                f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes",
                "part_headers_too_large",
            )
        self.count_form(n)
        target.extend(data[start:end])

    def _header_end(self) -> None:
        self._headers[bytes(self._hname).decode("latin-1").lower()] = bytes(self._hvalue)
        self._hname.clear()
        self._hvalue.clear()

    def _headers_finished(self) -> None:
        info, raw_name = _part_info(self._headers)
        if len(raw_name) > MAX_FIELD_NAME_BYTES:
            raise _form_too_large(
                f"a form field name is longer than {MAX_FIELD_NAME_BYTES} bytes",
                "field_name_too_long",
            )
        self._in_file = info.name == FILE_FIELD
        self._ignored = not info.name
        self.events.append(("headers", info))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            # A field's value or an ignored part: both count, or a part without a name
            # could stream without end.
            self.count_form(end - start)
            if self._ignored:
                return
        self.events.append(("data", data[start:end]))

    def _end(self) -> None:
        self.ended = True


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


async def _refuse(stream: Any, budget: int, err: ApiError) -> ApiError:
    """The error to raise for a refused body, after draining what the budget allows."""
    if not await _drain(stream, budget):
        return _close(err)
    return err


async def receive_upload(
    request: Request,
    limits: Limits,
    open_sink: Callable[[], Awaitable[Sink]],
) -> Upload:
    """Parse the form; the `file` field streams into the sink opened by `open_sink`.

    Raises ApiError (413 over the limits, 400/422 for a malformed or truncated form).
    The caller aborts the sink on any error.
    """
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes + limits.max_drain:
        # Far over the limit: answer now. curl waits for "100 Continue" on big bodies
        # (uvicorn sends it only when the body is read), so it sees this cleanly.
        raise _close(_too_large(limits.max_bytes))

    collector = _Collector()
    parser = MultipartParser(
        boundary,
        collector.callbacks(),
        max_header_count=_PARSER_MAX_HEADER_COUNT,
        max_header_size=_PARSER_MAX_HEADER_SIZE,
    )
    receiver = _Receiver(limits, open_sink)
    stream = request.stream()
    try:
        async for chunk in stream:
            try:
                await _feed(parser, collector, receiver, chunk)
            except ApiError as exc:
                if exc.status == 400:
                    raise  # malformed: no point reading on
                # Over a limit or invalid: read (and drop) the rest within the drain
                # budget so the client gets this answer rather than a reset connection.
                raise await _refuse(stream, limits.max_drain, exc) from None
        parser.finalize()
    except ClientDisconnect as exc:
        raise ApiError(
            400, "the client closed the connection mid-upload", code="bad_request"
        ) from exc
    if not collector.ended:
        # The stream ended cleanly (a chunked body's last chunk, or all of a declared
        # Content-Length) but the form did not: what arrived of the file is a prefix of
        # it, and storing that would import a silently truncated catalog.
        raise ApiError(400, TRUNCATED, code="truncated_body")
    return receiver.result()


async def _feed(
    parser: MultipartParser, collector: _Collector, receiver: _Receiver, chunk: bytes
) -> None:
    if collector.ended:
        # After the closing boundary the parser drops everything (an epilogue is legal);
        # it still counts, or a client could hold the request open without end.
        collector.count_form(len(chunk))
        return
    try:
        parser.write(chunk)
    except MultipartParseError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}", code="bad_request") from exc
    try:
        for kind, value in collector.events:
            await receiver.apply(kind, value)
    finally:
        collector.events.clear()


class _Receiver:
    """Applies the collector's events: file bytes to the sink, field values to `fields`."""

    def __init__(self, limits: Limits, open_sink: Callable[[], Awaitable[Sink]]) -> None:
        self.limits = limits
        self.open_sink = open_sink
        self.upload = Upload()
        self.counter = FileRowCounter(limits.max_rows) if limits.max_rows is not None else None
        self.head = bytearray()
        self.sink: Sink | None = None
        self.part: str | None = None
        self.value = bytearray()

    async def apply(self, kind: str, value: Any) -> None:
        if kind == "headers":
            await self._begin(value)
        elif kind == "data":
            if self.part == FILE_FIELD:
                await self._file_data(value)
            elif self.part:
                self.value += value  # bounded: the collector counted it
        elif kind == "end":
            if self.part and self.part != FILE_FIELD:
                self.upload.fields[self.part] = self.value.decode("utf-8", "replace")
            self.part = None

    async def _begin(self, info: PartInfo) -> None:
        self.part = info.name
        self.value.clear()
        if info.name != FILE_FIELD:
            return
        if self.sink is not None:
            raise ApiError(422, "send exactly one file per request", code="invalid")
        self.upload.filename, self.upload.content_type = info.filename, info.content_type
        self.sink = await self.open_sink()

    async def _file_data(self, data: bytes) -> None:
        assert self.sink is not None
        limits = self.limits
        self.upload.size += len(data)
        if self.upload.size > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        if self.counter is not None:
            if self.counter.gzip is False:
                self.counter.feed(data)
            else:
                # Gzipped (or not known yet): inflating can cost far more CPU than the
                # bytes suggest, so it runs off the event loop.
                await anyio.to_thread.run_sync(self.counter.feed, data)
            self._check_rows()
        await self.sink.write(data)

    def _check_rows(self) -> None:
        if self.counter is not None and self.counter.over:
            raise ApiError(
                422,
                f"the file has more than {self.limits.max_rows} rows including "
                "the header; split it into smaller files",
                code="too_many_rows",
            )

    def result(self) -> Upload:
        if self.sink is None:
            raise ApiError(422, "the form has no file in the field 'file'", code="missing_file")
        self.upload.head = bytes(self.head)
        if self.counter is not None:
            self.counter.finish()
            self._check_rows()
        self.upload.rows = self.counter.rows if self.counter is not None else None
        return self.upload


def _close(err: ApiError) -> ApiError:
    err.headers["Connection"] = "close"
    return err


def _part_info(headers: dict[str, bytes]) -> tuple[PartInfo, bytes]:
    """The part's field name, file name and type, and its raw name (for the limit)."""
    disposition, params = parse_options_header(headers.get("content-disposition"))
    if disposition != b"form-data":
        return PartInfo("", None, None), b""
    raw_name = params.get(b"name", b"")
    raw_filename = params.get(b"filename")
    filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
    ctype = headers.get("content-type")
    info = PartInfo(
        raw_name.decode("utf-8", "replace"), filename, ctype.decode("latin-1") if ctype else None
    )
    return info, raw_name
