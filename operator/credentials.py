"""Storage credentials for one import: what its loader may touch, and nothing else.

Each import's Job gets its own temporary MinIO credentials (STS AssumeRole, signed with
the operator's own keys, which never leave the operator's namespace) under a session
policy that allows exactly: reading its own source object, and reading and writing its
own catalog's prefix. A namespace editor who reads that Secret gets nothing of another
tenant's uploads or catalogs. See docs/security.md.

The source itself must lie in the upload bucket under the import's own namespace: a
ProductImport naming another tenant's object (or a catalog object) is refused before any
credential is minted.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from minio.credentials import AssumeRoleProvider

from productimport.engine.errors import TemporaryFailure
from productimport.engine.objectstore import MinioSettings
from productimport.engine.s3store import DEFAULT_REGION
from productimport.models.resource import ProductImportSpec

# MinIO's policy language treats these as wildcards or variables in a resource: a key
# holding one could match (or expand to) other tenants' objects.
POLICY_SPECIAL = ("*", "?", "$")


class SourceNotAllowed(ValueError):
    """The import names an object outside its own namespace's uploads."""


def check_source(namespace: str, spec: ProductImportSpec, upload_bucket: str) -> None:
    """Raise SourceNotAllowed unless an object source lies in `upload_bucket` under
    `<namespace>/` (URL sources are fetched from outside MinIO: nothing to confine here)."""
    obj = spec.source.object
    if obj is None:
        return
    key = obj.key
    where = f"s3://{obj.bucket}/{key}"
    if obj.bucket != upload_bucket or not key.startswith(f"{namespace}/"):
        raise SourceNotAllowed(
            f"{where} is not this namespace's: an object source must lie in bucket "
            f"{upload_bucket!r} under {namespace}/ (upload it there, or use the REST API)"
        )
    if ".." in key.split("/") or any(c in key for c in POLICY_SPECIAL):
        raise SourceNotAllowed(f"{where}: a source key may not contain '..', '*', '?' or '$'")


def session_policy(catalog_objects: str, source: str | None, table: str) -> dict[str, Any]:
    """The loader's permissions, from s3:// references: its catalog's objects (read,
    write, abort a multipart upload; `catalog_objects` ends in a wildcard), its catalog's
    Delta table (`table`, in a bucket of its own: list, read, write) and its source
    object (read). Nothing is listed outside the table's own bucket (MinIO's s3:prefix
    condition can be satisfied by a request header on the version pinned here, which is
    why each table has a bucket), no delete, nothing of any other bucket."""

    def arn(ref: str) -> str:
        if not ref.startswith("s3://"):
            raise ValueError(f"the operator's store and sources must be s3://, not {ref!r}")
        return "arn:aws:s3:::" + ref.removeprefix("s3://")

    table_bucket = arn(table).split("/", 1)[0]
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [arn(catalog_objects), f"{table_bucket}/*"],
        },
        # A Delta reader lists the table's log to find its latest version.
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [table_bucket]},
    ]
    if source is not None:
        statements.append(
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [arn(source)]}
        )
    return {"Version": "2012-10-17", "Statement": statements}


def mint(settings: MinioSettings, policy: dict[str, Any], seconds: int) -> dict[str, str]:
    """Temporary credentials under `policy`, as the loader's MINIO_* variables."""
    scheme = "https" if settings.secure else "http"
    provider = AssumeRoleProvider(
        sts_endpoint=f"{scheme}://{settings.endpoint}",
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        duration_seconds=seconds,
        policy=json.dumps(policy, separators=(",", ":")),
        region=settings.region or "",
    )
    try:
        creds = provider.retrieve()
    except Exception as exc:  # minio-py raises bare ValueError/urllib3 errors here
        raise TemporaryFailure(f"MinIO refused or did not answer AssumeRole: {exc}") from exc
    return {
        "MINIO_ENDPOINT": settings.endpoint,
        "MINIO_SECURE": "true" if settings.secure else "false",
        "MINIO_REGION": settings.region or DEFAULT_REGION,
        "MINIO_ACCESS_KEY": creds.access_key,
        "MINIO_SECRET_KEY": creds.secret_key,
        "MINIO_SESSION_TOKEN": creds.session_token or "",
    }


class LoaderCredentials(Protocol):
    """The seam the reconciler gets a loader's credentials through: the MINIO_* variables
    for a loader that may read and write `catalog_objects` and its catalog's Delta table
    `table` and read `source` (s3:// references, `catalog_objects` ending in a wildcard;
    `source` None for a URL source). Raises TemporaryFailure when they cannot be had now."""

    def __call__(self, catalog_objects: str, source: str | None, table: str) -> dict[str, str]: ...


class StsCredentials:
    """The real LoaderCredentials: STS AssumeRole at MinIO under `session_policy`."""

    def __init__(self, settings: MinioSettings, seconds: int) -> None:
        self.settings = settings
        self.seconds = seconds

    def __call__(self, catalog_objects: str, source: str | None, table: str) -> dict[str, str]:
        policy = session_policy(catalog_objects, source, table)
        return mint(self.settings, policy, self.seconds)
