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
from typing import Any
from urllib.parse import urlsplit

from minio.credentials import AssumeRoleProvider

from productimport.engine.errors import TemporaryFailure
from productimport.engine.objectstore import MinioObjectStore, MinioSettings, minio_client
from productimport.models.resource import ProductImportSpec

# MinIO's policy language treats these as wildcards or variables in a resource: a key
# holding one could match (or expand to) other tenants' objects.
POLICY_SPECIAL = ("*", "?", "$")
# MinIO's default region: with a region set, a client never asks the bucket's location
# (an action the session need not be allowed).
DEFAULT_REGION = "us-east-1"


class SourceNotAllowed(ValueError):
    """The import names an object outside its own namespace's uploads."""


def store_location(store: str) -> tuple[str, str]:
    """(bucket, prefix) of the loader's store URL, s3://BUCKET[/prefix]."""
    parts = urlsplit(store)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"the operator's store must be s3://BUCKET[/prefix], not {store!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


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


def session_policy(
    namespace: str, spec: ProductImportSpec, store_bucket: str, store_prefix: str
) -> dict[str, Any]:
    """The loader's permissions: its source (read), its catalog's prefix (read, write,
    abort a multipart upload). No listing (MinIO's s3:prefix condition can be satisfied
    by a request header on the version pinned here), no delete, nothing of the bucket."""
    catalog = f"arn:aws:s3:::{store_bucket}/{store_prefix}{namespace}/{spec.catalog}/*"
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [catalog],
        },
    ]
    if spec.source.object is not None:
        src = spec.source.object
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{src.bucket}/{src.key}"],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_store_bucket(settings: MinioSettings, bucket: str) -> None:
    """Create the catalog bucket if it is missing: the loader's credentials reach only
    its catalog's prefix, so it can no longer do that itself."""
    MinioObjectStore(minio_client(settings), bucket).ensure_bucket()


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
