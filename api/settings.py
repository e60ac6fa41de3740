"""Settings of the upload API, read from the environment (pydantic-settings).

Every variable is prefixed `PRODUCTIMPORT_API_`, except the MinIO connection, which uses
the same `MINIO_*` variables as the loader (docs/loader-contract.md) so one Secret serves
both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from productimport.engine.objectstore import MinioSettings

MiB = 1024 * 1024
WorkspaceId = Annotated[str, StringConstraints(pattern=r"^ws_[a-z0-9]+$", max_length=60)]
NamespaceName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
]


class AuthMode(StrEnum):
    static = "static"  # tokens from a file / Secret, each bound to namespaces (development)
    kubernetes = "kubernetes"  # TokenReview + SubjectAccessReview against the cluster


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTIMPORT_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"

    auth_mode: AuthMode = AuthMode.static
    # Kubernetes mode: the audiences a bearer token must be issued for (comma-separated).
    # Not the API server's own: a token taken from any Pod would then be accepted.
    token_audiences: str = "productimport"
    # Static mode: a YAML/JSON file `{"tokens": [{"name", "token", "namespaces": [...]}]}`
    # (a mounted Secret in a cluster), and/or the same document inline.
    tokens_file: str | None = None
    tokens: str | None = None
    # Kubernetes mode: TokenReviews of tokens the API has not seen succeed recently, per
    # second and in a burst, for the whole process. A client spraying made-up tokens gets
    # 429 above this instead of turning each request into a call to the API server.
    token_review_rate: float = Field(default=50.0, gt=0)
    token_review_burst: int = Field(default=100, ge=1)

    # OpenID Connect, next to either mode: a bearer token that is a JWT whose `iss` is
    # this issuer is verified against the issuer's published keys (api/oidc.py, no
    # TokenReview) and authorized with a SubjectAccessReview for the user and groups it
    # maps to. Unset: no OIDC. https, or http on a loopback address (tests).
    oidc_issuer_url: str | None = None
    # The `aud` a token must carry (the client id at the identity provider). Required
    # with an issuer.
    oidc_audience: str | None = None
    # The Kubernetes user is PREFIX + this claim (`email` needs `email_verified` not
    # false). The prefix keeps OIDC users apart from ServiceAccounts and other users in
    # RoleBindings; empty: none. A user or group starting `system:` is never mapped.
    oidc_username_claim: str = "sub"
    oidc_username_prefix: str = "oidc:"
    # Groups: PREFIX + each value of this claim (a list of strings, or one); empty claim
    # name: groups are not read.
    oidc_groups_claim: str = "groups"
    oidc_groups_prefix: str = "oidc:"
    # PEM CA bundle the issuer's https certificate must chain to (instead of the public
    # roots).
    oidc_ca_file: str | None = None

    # Where the Kubernetes API is: a kubeconfig path, else in-cluster configuration.
    kubeconfig: str | None = Field(
        default=None, validation_alias=AliasChoices("PRODUCTIMPORT_API_KUBECONFIG", "KUBECONFIG")
    )

    # Uploaded source files go here under generated keys.
    upload_bucket: str = "uploads"
    # The loader's store (`--store s3://BUCKET[/prefix]`): import reports and catalogs.
    catalog_bucket: str = "catalog"
    catalog_prefix: str = ""

    # Uploads: the size limit is enforced while streaming. Part size x (in flight + 1) is
    # the memory an upload can hold at once.
    max_upload_bytes: int = 5 * 1024 * MiB
    part_size: int = 8 * MiB
    parts_in_flight: int = 2
    # After the limit is hit the rest of the body is read and dropped (so the client sees
    # the 413 instead of a reset connection), up to this many further bytes.
    max_drain_bytes: int = 64 * MiB
    # Incomplete multipart uploads in the upload bucket older than this (an API that died
    # mid-upload leaves them) are aborted when the API starts, and by a bucket lifecycle
    # rule (in whole days) where the store takes one (api/stale_uploads.py). Keep it
    # above the longest upload: another replica's upload in flight is as incomplete.
    abort_incomplete_uploads_after_seconds: float = Field(default=24 * 3600, ge=0)

    # The Elastic Path compatible route: its own limits (the seed's 50,000 rows including
    # the header, 50 MB), the catalog it imports into and the namespace used when the
    # token does not name one.
    pcm_max_rows: int = 50_000
    pcm_max_bytes: int = 50 * 1000 * 1000
    pcm_catalog: str = "main"
    pcm_namespace: str = "default"

    # The SaaS-compatible route: catalog used when `catalog_id` is absent.
    saas_default_catalog: str = "main"
    # Workspace ids mapped to existing namespaces, JSON {"ws_abc": "shop-a"}; an unmapped
    # id is its own name with `_` as `-` (docs/api.md). Namespaces are never created.
    workspaces: dict[WorkspaceId, NamespaceName] = Field(default_factory=dict)

    # Product reads keep Parquet snapshots on local disk: at most this many bytes
    # together (least recently used evicted; a snapshot larger than this is refused
    # with 507). Keep it below the size of the volume under `snapshot_cache_dir` (the
    # chart's /tmp emptyDir is 256 Mi). Unset dir: the system temp directory.
    snapshot_cache_bytes: int = Field(default=192 * MiB, ge=1)
    snapshot_cache_dir: str | None = None

    # Mail at the end of an import (`notify_email` on the SaaS route) is sent by the
    # operator; say here whether it can: true only where the operator has an SMTP server
    # (the chart sets this from operator.smtp.host). False: notify_email=true is refused
    # with 422 instead of being accepted and never sent.
    email_enabled: bool = False

    @model_validator(mode="after")
    def _oidc_complete(self) -> ApiSettings:
        if not self.oidc_issuer_url:
            return self
        url = urlsplit(self.oidc_issuer_url)
        loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
        if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            raise ValueError(
                f"oidc_issuer_url {self.oidc_issuer_url!r} must be an https URL (http only "
                "on a loopback address)"
            )
        if url.query or url.fragment:
            raise ValueError("oidc_issuer_url must have no query or fragment")
        if not self.oidc_audience:
            raise ValueError("oidc_audience is required with oidc_issuer_url")
        if not self.oidc_username_claim:
            raise ValueError("oidc_username_claim must not be empty")
        return self

    @property
    def minio(self) -> MinioSettings:
        """MinIO, from the same MINIO_* variables as the operator and the loader (one
        settings class for all three; no default credentials)."""
        return MinioSettings()
