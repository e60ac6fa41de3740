"""One object-store interface, two implementations: a local directory and MinIO.

The catalog needs four things of a store: read, write, list, and a conditional write
(create-if-absent or replace-if-unchanged) for the pointer that names the current
catalog version. Everything else in the engine is written against `ObjectStore`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error
from pydantic_settings import BaseSettings, SettingsConfigDict

from productimport.engine.errors import (
    InvalidOptions,
    PreconditionFailed,
    SourceNotFound,
    TemporaryFailure,
)

DEFAULT_LOCAL_STORE = ".productimport-store"


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


class MinioSettings(BaseSettings):
    """MinIO connection, from the environment (the Job gets these from a Secret)."""

    model_config = SettingsConfigDict(env_prefix="MINIO_")

    endpoint: str = "127.0.0.1:9000"
    access_key: str = ""
    secret_key: str = ""
    secure: bool = False
    region: str | None = None


def minio_client(settings: MinioSettings | None = None) -> Minio:
    settings = settings or MinioSettings()
    # Bounded retries: an unreachable MinIO should fail the attempt in seconds, and the
    # Job's backoff (exit 75) decides about retrying, not a minute of socket retries.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120),
        retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
        maxsize=10,
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn transport failures into the engine's retryable failure."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TemporaryFailure(f"MinIO unavailable while {what}: {exc}") from exc


class MinioObjectStore:
    """Objects in a MinIO bucket under an optional prefix."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._bucket_checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        with _store_errors(f"checking bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                with contextlib.suppress(S3Error):
                    self.client.make_bucket(self.bucket)
        self._bucket_checked = True

    def get(self, key: str) -> bytes:
        found = self.get_with_etag(key)
        if found is None:
            raise KeyError(key)
        return found[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        with _store_errors(f"reading {self.ref(key)}"):
            try:
                response = self.client.get_object(self.bucket, self._key(key))
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket"):
                    return None
                raise
            try:
                data = response.read()
                etag = response.headers.get("ETag", "")
            finally:
                response.close()
                response.release_conn()
        return data, etag

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        with _store_errors(f"writing {self.ref(key)}"):
            self.client.put_object(
                self.bucket, self._key(key), io.BytesIO(data), len(data), content_type=content_type
            )

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """PUT with If-Match (replace only that version) or If-None-Match: * (create only).

        minio-py's put_object cannot send conditional headers, so this goes through the
        client's own signed request path; MinIO answers 412 when the condition fails.
        """
        self._ensure_bucket()
        condition = {"If-Match": etag} if etag else {"If-None-Match": "*"}
        headers = {"Content-Type": "application/json", **condition}
        with _store_errors(f"writing {self.ref(key)}"):
            try:
                response = self.client._execute(
                    "PUT", self.bucket, self._key(key), body=data, headers=headers
                )
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise PreconditionFailed(f"{self.ref(key)} changed") from exc
                raise
        return response.headers.get("ETag", "")

    def upload(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        with _store_errors(f"uploading {self.ref(key)}"):
            self.client.fput_object(
                self.bucket, self._key(key), str(path), content_type=content_type
            )

    def download(self, key: str, path: Path) -> None:
        with _store_errors(f"downloading {self.ref(key)}"):
            try:
                self.client.fget_object(self.bucket, self._key(key), str(path))
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket"):
                    raise KeyError(key) from exc
                raise

    def exists(self, key: str) -> bool:
        with _store_errors(f"checking {self.ref(key)}"):
            try:
                self.client.stat_object(self.bucket, self._key(key))
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                    return False
                raise

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        with _store_errors(f"listing {self.ref(prefix)}"):
            try:
                for obj in self.client.list_objects(
                    self.bucket, prefix=self._key(prefix), recursive=True
                ):
                    yield obj.object_name[strip:]
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return
                raise

    def delete(self, key: str) -> None:
        with _store_errors(f"deleting {self.ref(key)}"):
            self.client.remove_object(self.bucket, self._key(key))


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidOptions(f"not an s3:// URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def open_store(location: str | None) -> ObjectStore:
    """`s3://bucket[/prefix]` for MinIO, anything else is a local directory."""
    location = location or os.environ.get("PRODUCTIMPORT_STORE") or DEFAULT_LOCAL_STORE
    if location.startswith("s3://"):
        bucket, prefix = parse_s3_url(location)
        return MinioObjectStore(minio_client(), bucket, prefix)
    return LocalObjectStore(location)


def fetch_s3_object(url: str, target: Path) -> None:
    """Download `s3://bucket/key` from the configured MinIO to a local file."""
    bucket, key = parse_s3_url(url)
    if not key:
        raise InvalidOptions(f"s3:// source needs an object key: {url!r}")
    store = MinioObjectStore(minio_client(), bucket)
    try:
        store.download(key, target)
    except KeyError:
        raise SourceNotFound(f"source object {url} does not exist") from None
