"""The MinIO implementation of the object store (imported only when a store or source
is an s3:// URL; see objectstore.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import S3Error
from pydantic_settings import BaseSettings, SettingsConfigDict

from productimport.engine.errors import PreconditionFailed, TemporaryFailure

# MinIO's default region. With a region set, a client never asks a bucket's location,
# an action the operator's user (on the upload bucket) and an import's session need not
# be allowed: without it, reading an upload's size was refused (GetBucketLocation).
DEFAULT_REGION = "us-east-1"


class MinioSettings(BaseSettings):
    """MinIO connection, from the environment (the Job gets these from a Secret)."""

    model_config = SettingsConfigDict(env_prefix="MINIO_")

    endpoint: str = "127.0.0.1:9000"
    access_key: str = ""
    secret_key: str = ""
    secure: bool = False
    region: str | None = None
    # Set with temporary credentials (an import Job's, minted by the operator).
    session_token: str | None = None


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
        session_token=settings.session_token or None,
        secure=settings.secure,
        region=settings.region or DEFAULT_REGION,
        http_client=http,
    )


TABLE_FOLDER = "products"


def table_bucket(bucket: str, prefix: str, namespace: str, catalog: str) -> str:
    """The bucket of one catalog's Delta table.

    A bucket per catalog, because a Delta reader must list the table's log and MinIO
    cannot confine a listing right to a prefix of a shared bucket (an `s3:prefix`
    condition is satisfied by a request header: docs/security.md). The name is the
    catalog bucket's, then 32 hex digits of a hash of the catalog's full location:
    injective in practice, within S3's 63 characters, and stable.
    """
    digest = hashlib.sha256(f"{bucket}/{prefix}/{namespace}/{catalog}".encode()).hexdigest()
    return f"{bucket[:30].rstrip('.-')}-{digest[:32]}"


def delta_storage_options(settings: MinioSettings) -> dict[str, str]:
    """delta-rs's object-store options for this MinIO (docs/research/delta-lake-on-minio.md).

    Commits are conditional PUTs (`If-None-Match: *` on the next log entry), which MinIO
    honours; `conditional_put=etag` says so explicitly. No locking service is needed.
    """
    scheme = "https" if settings.secure else "http"
    options = {
        "AWS_ENDPOINT_URL": f"{scheme}://{settings.endpoint}",
        "AWS_ACCESS_KEY_ID": settings.access_key,
        "AWS_SECRET_ACCESS_KEY": settings.secret_key,
        "AWS_REGION": settings.region or DEFAULT_REGION,
        "AWS_ALLOW_HTTP": "false" if settings.secure else "true",
        "conditional_put": "etag",
    }
    if settings.session_token:
        options["AWS_SESSION_TOKEN"] = settings.session_token
    return options


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn transport failures into the engine's retryable failure."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TemporaryFailure(f"MinIO unavailable while {what}: {exc}") from exc


class MinioObjectStore:
    """Objects in a MinIO bucket under an optional prefix."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        prefix: str = "",
        settings: MinioSettings | None = None,
    ) -> None:
        self.client = client
        # The same server and credentials, for delta-rs (catalog tables); by default the
        # environment's, as minio_client() takes them.
        self.settings = settings or MinioSettings()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._bucket_checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def table_store(self, namespace: str, catalog: str) -> MinioObjectStore:
        """Where a catalog's Delta table lives: a bucket of its own (table_bucket)."""
        bucket = table_bucket(self.bucket, self.prefix, namespace, catalog)
        return MinioObjectStore(self.client, bucket, TABLE_FOLDER, self.settings)

    def table_location(self) -> tuple[str, dict[str, str]]:
        """This store as a Delta table's location, and delta-rs's options for it."""
        return f"s3://{self.bucket}/{self.prefix}", delta_storage_options(self.settings)

    def ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        with _store_errors(f"checking bucket {self.bucket}"):
            try:
                exists = self.client.bucket_exists(self.bucket)
            except S3Error as exc:
                # An import's own credentials may touch its catalog's prefix only, not
                # the bucket: it is there (the operator made it), or the first write
                # says NoSuchBucket.
                if exc.code != "AccessDenied":
                    raise
                exists = True
            if not exists:
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
        self.ensure_bucket()
        with _store_errors(f"writing {self.ref(key)}"):
            self.client.put_object(
                self.bucket, self._key(key), io.BytesIO(data), len(data), content_type=content_type
            )

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """PUT with If-Match (replace only that version) or If-None-Match: * (create only).

        minio-py's put_object cannot send conditional headers, so this goes through the
        client's own signed request path; MinIO answers 412 when the condition fails.
        """
        self.ensure_bucket()
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
        self.ensure_bucket()
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
