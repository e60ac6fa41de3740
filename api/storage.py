"""MinIO: uploads streamed in parts with bounded memory, and the loader's reports.

An upload holds at most `part_size x (parts_in_flight + 1)` bytes: one part filling
while up to `parts_in_flight` parts travel to MinIO in worker threads. Files smaller
than one part take a single PUT.

minio-py's public `put_object` reads a stream but queues parts without bound when the
reader is faster than MinIO, so the writer below drives the S3 multipart calls itself
(`_create_multipart_upload`, `_upload_part`, `_complete_multipart_upload`,
`_abort_multipart_upload`; stable across minio 7.x, pinned in requirements.lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anyio
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

from productimport.api.settings import ApiSettings
from productimport.engine.objectstore import minio_client

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last is at least 5 MiB


def make_minio(settings: ApiSettings) -> Minio:
    return minio_client(settings.minio)


class MultipartWriter:
    """Writes one object from a stream of chunks. Call `abort()` on any failure."""

    def __init__(
        self,
        client: Minio,
        pool: ThreadPoolExecutor,
        bucket: str,
        key: str,
        *,
        part_size: int,
        parts_in_flight: int,
        content_type: str = "application/octet-stream",
    ) -> None:
        self._client = client
        self._pool = pool
        self.bucket = bucket
        self.key = key
        self._part_size = max(part_size, MIN_PART_SIZE)
        self._in_flight_max = max(parts_in_flight, 1)
        self._headers = {"Content-Type": content_type}
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._pending: list[tuple[int, Future[str]]] = []
        self._parts: list[Part] = []
        self._next_part = 1
        self.size = 0
        self._done = False

    async def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            await self._send_part(part)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = await self._run(
                self._client._create_multipart_upload, self.bucket, self.key, dict(self._headers)
            )
        # Bound the parts in flight: wait for the oldest before sending another.
        while len(self._pending) >= self._in_flight_max:
            await self._collect_oldest()
        number = self._next_part
        self._next_part += 1
        future = self._pool.submit(
            self._client._upload_part, self.bucket, self.key, data, None, self._upload_id, number
        )
        self._pending.append((number, future))

    async def _collect_oldest(self) -> None:
        number, future = self._pending.pop(0)
        etag = await asyncio.wrap_future(future)
        self._parts.append(Part(number, etag))

    async def finish(self) -> int:
        """Complete the object; returns its size."""
        if self._upload_id is None:
            data = bytes(self._buffer)
            self._buffer.clear()
            await self._run(
                lambda: self._client.put_object(
                    self.bucket,
                    self.key,
                    io.BytesIO(data),
                    len(data),
                    content_type=self._headers["Content-Type"],
                )
            )
        else:
            if self._buffer:
                await self._send_part(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                await self._collect_oldest()
            self._parts.sort(key=lambda p: p.part_number)
            await self._run(
                self._client._complete_multipart_upload,
                self.bucket,
                self.key,
                self._upload_id,
                self._parts,
            )
        self._done = True
        return self.size

    async def abort(self) -> None:
        """Leave nothing behind: cancel the multipart upload (or delete the object)."""
        self._buffer.clear()
        for _, future in self._pending:
            future.cancel()
        for _, future in self._pending:
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(future)
        self._pending.clear()
        try:
            if self._upload_id is not None and not self._done:
                await self._run(
                    self._client._abort_multipart_upload, self.bucket, self.key, self._upload_id
                )
            elif self._done:
                await self._run(self._client.remove_object, self.bucket, self.key)
        except Exception:
            log.exception("could not clean up s3://%s/%s", self.bucket, self.key)


async def remove_object(client: Minio, bucket: str, key: str) -> None:
    await anyio.to_thread.run_sync(client.remove_object, bucket, key)


def ensure_bucket(client: Minio, bucket: str) -> None:
    try:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    except S3Error as exc:
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def read_object(client: Minio, bucket: str, key: str) -> bytes | None:
    """The whole (small) object, or None when it does not exist."""
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def open_object(client: Minio, bucket: str, key: str) -> Any | None:
    """A streaming response for the object (caller closes it), or None when missing."""
    try:
        return client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise


def iter_response(response: Any, chunk: int = 256 * 1024) -> Iterator[bytes]:
    try:
        yield from response.stream(chunk)
    finally:
        response.close()
        response.release_conn()


async def aiter_object(response: Any) -> AsyncIterator[bytes]:
    """Stream a MinIO response to the client without holding it in memory."""
    iterator = iter_response(response)
    sentinel = object()
    while True:
        chunk = await anyio.to_thread.run_sync(next, iterator, sentinel)
        if chunk is sentinel:
            return
        yield chunk  # type: ignore[misc]
