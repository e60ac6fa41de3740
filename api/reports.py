"""Where an import's error report is, following docs/loader-contract.md, and reading it.

`{prefix}{namespace}/{catalog}/imports/{importId}/errors.csv` and `errors.json` in the
catalog bucket (Catalog.import_key); the import id is the ProductImport's UID.
`status.errorsRef`, when the operator has set it, names the CSV and wins.

errors.json is one JSON array of error records (the loader writes
`[{"line", "column", "code", "message", "value"}, ...]`, productimport/engine/runner.py).
A report can hold as many records as the file had bad rows, so it is never read whole:
`iter_json_array` decodes one record at a time from the MinIO response, holding at most
one read chunk plus one record (MAX_RECORD_CHARS) in memory whatever the report's size.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import anyio
from minio import Minio

from productimport.api.settings import ApiSettings
from productimport.api.storage import iter_response, open_object
from productimport.api.views import ImportView
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import parse_s3_url
from productimport.engine.s3store import MinioObjectStore

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# One record: the loader truncates the offending value, so a real record is far smaller;
# anything larger is not a report we wrote, and buffering it is what we must not do.
MAX_RECORD_CHARS = 1024 * 1024
_WHITESPACE = " \t\n\r"
_DELIMITERS = ",]" + _WHITESPACE


class ReportError(Exception):
    """The stored report is not a JSON array of records (corrupt or not ours)."""


def report_location(
    client: Minio, settings: ApiSettings, imp: ImportView, kind: str
) -> tuple[str, str]:
    """(bucket, key) of errors.csv or errors.json for the import."""
    if imp.errors_ref and imp.errors_ref.startswith("s3://"):
        bucket, key = parse_s3_url(imp.errors_ref)
        base = key.rsplit("/", 1)[0]
        return bucket, f"{base}/errors.{kind}"
    # The loader's own layout (engine/catalog.py), in the store the loader writes to.
    store = MinioObjectStore(client, settings.catalog_bucket, settings.catalog_prefix)
    catalog = Catalog(store, imp.namespace, imp.catalog)
    return parse_s3_url(store.ref(catalog.import_key(imp.uid, f"errors.{kind}")))


async def open_report(client: Minio, settings: ApiSettings, imp: ImportView, kind: str) -> Any:
    bucket, key = report_location(client, settings, imp, kind)
    return await anyio.to_thread.run_sync(open_object, client, bucket, key)


class _ArrayReader:
    """Yields the elements of one JSON array read from a stream of byte chunks."""

    def __init__(self, chunks: Iterable[bytes], max_item_chars: int) -> None:
        self._chunks = iter(chunks)
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._json = json.JSONDecoder()
        self._max = max_item_chars
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _more(self) -> bool:
        """Append the next chunk (dropping what is consumed); False once all is read."""
        if self._eof:
            return False
        chunk = next(self._chunks, None)
        self._eof = chunk is None
        self._buf = self._buf[self._pos :] + self._decode(chunk or b"", final=self._eof)
        self._pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not whitespace, "" at the end of the stream."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return ""

    def _value(self) -> Any:
        if not self._peek():
            raise ReportError("the report ends inside the array")
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                end = -1
            if end != -1 and self._complete(value, end):
                self._pos = end
                return value
            if len(self._buf) - self._pos > self._max:
                raise ReportError(f"a record is larger than {self._max} characters")
            if not self._more():
                raise ReportError("the report ends inside a record (or is not valid JSON)")

    def _complete(self, value: Any, end: int) -> bool:
        """Whether a decoded value is all of it. Objects, arrays, strings and literals end
        unmistakably; a number cut by a chunk boundary ("12" of "12.5e3") decodes too, so
        it counts only once a delimiter follows it, or at the end of the stream."""
        if end == len(self._buf):
            return self._eof
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self._buf[end] in _DELIMITERS
        return True

    def __iter__(self) -> Iterator[Any]:
        first = self._peek()
        if first != "[":
            raise ReportError("the report is not a JSON array")
        self._pos += 1
        if self._peek() == "]":
            return
        while True:
            yield self._value()
            sep = self._peek()
            if not sep:
                raise ReportError("the report ends inside the array")
            self._pos += 1
            if sep == "]":
                return
            if sep != ",":
                raise ReportError(f"expected ',' or ']' in the report, found {sep!r}")


def iter_json_array(
    chunks: Iterable[bytes], max_item_chars: int = MAX_RECORD_CHARS
) -> Iterator[Any]:
    """The elements of a JSON array, decoded incrementally from `chunks`."""
    return iter(_ArrayReader(chunks, max_item_chars))


Records = Generator[tuple[int, dict[str, Any]], None, None]


def _records(response: Any) -> Records:
    """(position in the report, record) for each record; closes the response at the end
    or when the consumer closes this generator."""
    chunks = iter_response(response, READ_CHUNK)
    try:
        for index, record in enumerate(iter_json_array(chunks)):
            if isinstance(record, dict):
                yield index, record
    finally:
        chunks.close()


def _no_records() -> Records:
    yield from ()


async def open_error_records(client: Minio, settings: ApiSettings, imp: ImportView) -> Records:
    """The import's error records, read from MinIO as they are consumed: a blocking
    generator (pull from it in a worker thread; close it to release the connection).
    Empty when there is no report."""
    bucket, key = report_location(client, settings, imp, "json")
    response = await anyio.to_thread.run_sync(open_object, client, bucket, key)
    if response is None:
        return _no_records()
    return _records(response)
