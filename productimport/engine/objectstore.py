"""One object-store interface, two implementations: a local directory and MinIO.

The catalog needs four things of a store: read, write, list, and a conditional write
(create-if-absent or replace-if-unchanged) for the pointer that names the current
catalog version. Everything else in the engine is written against `ObjectStore`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from productimport.engine.errors import (
    InvalidOptions,
    PreconditionFailed,
    SourceNotFound,
)

DEFAULT_LOCAL_STORE = ".productimport-store"

# The MinIO half lives in s3store.py and is imported on first use: the MinIO client and
# pydantic-settings cost a local import a third of a second of start-up, which is most
# of what importing a small file takes.
_S3_NAMES = {"MinioSettings", "MinioObjectStore", "minio_client"}


def __getattr__(name: str) -> object:
    if name in _S3_NAMES:
        from productimport.engine import s3store

        return getattr(s3store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ObjectStore(Protocol):
    def ref(self, key: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def get_with_etag(self, key: str) -> tuple[bytes, str] | None: ...
    def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...
    def put_if(self, key: str, data: bytes, etag: str | None) -> str: ...
    def upload(self, key: str, path: Path, content_type: str = ...) -> None: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def ensure_bucket(self) -> None: ...
    def table_store(self, namespace: str, catalog: str) -> ObjectStore: ...
    def table_location(self) -> tuple[str, dict[str, str]]: ...


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: until its directory is synced, a power loss can undo it
    (the file's own fsync covers its content only)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore:
    """Objects as files below a directory; writes are atomic renames.

    A conditional write takes an exclusive flock on a per-key lock file, compares the
    content hash (the local "ETag") and only then renames the new file into place, so it
    is safe between processes on one machine.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise InvalidOptions(f"object key escapes the store: {key!r}")
        return path

    def ref(self, key: str) -> str:
        return str(self._path(key))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get(key)
        except KeyError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _write_atomically(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_directory(path.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._write_atomically(self._path(key), data)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        lock_path = path.parent / f".{path.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.get_with_etag(key)
            current_etag = current[1] if current else None
            if current_etag != etag:
                raise PreconditionFailed(f"{key}: expected {etag}, found {current_etag}")
            self._write_atomically(path, data)
        return hashlib.sha256(data).hexdigest()

    def upload(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
            _fsync_directory(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.exists():
            raise KeyError(key)
        with open(source, "rb") as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield str(path.relative_to(self.root))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def ensure_bucket(self) -> None:
        """A directory store has no bucket; its folders are made by the writes."""

    def table_store(self, namespace: str, catalog: str) -> LocalObjectStore:
        """Where a catalog's Delta table lives: `{namespace}/{catalog}/products`."""
        return LocalObjectStore(self._path(f"{namespace}/{catalog}/products"))

    def table_location(self) -> tuple[str, dict[str, str]]:
        """This store as a Delta table's location, and delta-rs's options for it."""
        return str(self.root), {}


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidOptions(f"not an s3:// URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def open_store(location: str | None) -> ObjectStore:
    """`s3://bucket[/prefix]` for MinIO, anything else is a local directory."""
    location = location or os.environ.get("PRODUCTIMPORT_STORE") or DEFAULT_LOCAL_STORE
    if location.startswith("s3://"):
        from productimport.engine.s3store import MinioObjectStore, minio_client

        bucket, prefix = parse_s3_url(location)
        from productimport.engine.s3store import MinioSettings

        settings = MinioSettings()
        return MinioObjectStore(minio_client(settings), bucket, prefix, settings)
    return LocalObjectStore(location)


def fetch_s3_object(url: str, target: Path) -> None:
    """Download `s3://bucket/key` from the configured MinIO to a local file."""
    from productimport.engine.s3store import MinioObjectStore, minio_client

    bucket, key = parse_s3_url(url)
    if not key:
        raise InvalidOptions(f"s3:// source needs an object key: {url!r}")
    store = MinioObjectStore(minio_client(), bucket)
    try:
        store.download(key, target)
    except KeyError:
        raise SourceNotFound(f"source object {url} does not exist") from None
