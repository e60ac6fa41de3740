"""The operator's settings, from the environment (prefix PRODUCTIMPORT_OPERATOR_).

MinIO comes from the same MINIO_* variables as the loader and the API, so one Secret
serves all three.
"""

from __future__ import annotations

import logging
import secrets

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from productimport.egress import EgressSettings
from productimport.engine.objectstore import MinioSettings

log = logging.getLogger(__name__)


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTIMPORT_OPERATOR_", extra="ignore")

    # Empty: watch every namespace (needs a ClusterRole); otherwise a comma-separated list.
    namespaces: str = ""
    log_level: str = "INFO"
    # Liveness/readiness (kopf's probe endpoint) and Prometheus metrics.
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    metrics_port: int = 9090

    # The loader Job.
    image: str = "ghcr.io/productimport/productimport:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    loader_command: list[str] = Field(default_factory=lambda: ["productimport"])
    loader_service_account: str | None = None
    store: str = "s3://catalog"
    # Object sources must lie in this bucket under the import's namespace (the API's
    # upload bucket).
    upload_bucket: str = "uploads"
    # How long an import's own MinIO credentials last (STS; at least an hour). They must
    # outlast the Job, retries included; the operator deletes them when the import ends.
    loader_credentials_seconds: int = 12 * 3600
    backoff_limit: int = 3
    # A Job without spec.job.activeDeadlineSeconds gets this one: a loader stuck (or
    # evicted and re-created) forever would hold its catalog's queue forever.
    default_active_deadline_seconds: int = 6 * 3600
    job_ttl_seconds: int = 86400
    default_cpu_request: str = "250m"
    default_memory_request: str = "512Mi"
    default_memory_limit: str = "2Gi"
    # The loader's /tmp (emptyDir sizeLimit) and its ephemeral-storage limit, unless the
    # import asks for its own: a 10M-row file (5.5 GB) with its spill files fits.
    default_tmp_size: str = "20Gi"
    default_threads: int | None = None
    # A partitioned import (docs/scaling.md): an object source of at least
    # `parallel_threshold_bytes` is merged by this many Pods side by side, unless its
    # spec.job.parallelism says otherwise (1: never). A 10M-row file is about 5.5 GB.
    parallelism: int = Field(4, ge=1, le=64)
    parallel_threshold_bytes: int = Field(2 * 2**30, ge=0)
    # Products per bucket of a new or growing catalog's Delta table (the loaders'
    # PRODUCTIMPORT_ROWS_PER_BUCKET; unset: the engine's million). Smaller buckets give
    # more merge Pods work; docs/scaling.md.
    rows_per_bucket: int | None = Field(None, ge=1)
    default_duckdb_memory_limit: str | None = "1GB"

    # How often an import with a Job is looked at again (Job state, progress).
    poll_seconds: float = 3.0
    # How often the head of each catalog's queue is started if it has not been (a
    # start that waited for the store, a missed wake-up): one pass per catalog.
    queue_resync_seconds: float = 30.0
    # status.queuePosition writes per resync, front of the queues first (the rest are
    # upper bounds until their turn): a long queue must not cost a write per import.
    queue_position_updates: int = Field(50, ge=0)
    # Reconcile passes at once (handlers.PassQueue); each holds a thread on API calls.
    pass_workers: int = Field(8, ge=1)
    # Imports running at once, cluster-wide (0: no limit), shared fairly between
    # namespaces; and per namespace (0: no limit of its own). docs/operations.md.
    max_running_imports: int = Field(50, ge=0)
    max_running_imports_per_namespace: int = Field(0, ge=0)
    # A Job that completed but whose result is not (yet) in the store: passes to wait.
    result_read_attempts: int = 20
    # The store unreachable for the operator itself: how long to keep retrying an import
    # that has no ended Job before it fails with reason StoreUnavailable. Once a Job has
    # ended, only the store can say whether it committed: retried for as long as it takes.
    store_retry_seconds: float = 300.0
    inline_errors: int = 5
    # A loader Pod whose image cannot be pulled: how long the kubelet may keep retrying
    # (a registry can be down for a moment) before the import fails. An image that is
    # absent under pull policy Never, or a Pod the kubelet refuses to start, fails at once.
    image_pull_grace_seconds: float = 300.0
    # A loader Pod the scheduler cannot place (PodScheduled False: no node with the CPU or
    # memory it asks for, a nodeSelector no node matches, ...) for this long, one placed
    # whose container is still waiting (ContainerCreating), or a Job that has made no Pod
    # at all in this long (a ResourceQuota refusing its Pods): the import fails
    # (Unschedulable, PodNotStarted, PodNotCreated), its Job is deleted and the catalog
    # moves on.
    pending_timeout_seconds: float = Field(600.0, ge=0)
    # The API server refusing an import's Job (a ResourceQuota, an admission policy, RBAC):
    # created again after job_create_backoff_seconds, doubled at each failure up to
    # job_create_backoff_max_seconds, for job_create_retry_seconds from the first failure
    # (counted by this process); then the import fails with reason JobCreateFailed and
    # the catalog's next import starts.
    job_create_retry_seconds: float = Field(600.0, ge=0)
    job_create_backoff_seconds: float = Field(5.0, gt=0)
    job_create_backoff_max_seconds: float = Field(60.0, gt=0)
    # Retention (operator/retention.py; docs/operations.md, "Retention"), a pass every
    # retention_interval_seconds (0: no passes, and a deleted import's documents stay):
    # the documents (result, progress, error reports) and the API-stored source of an
    # import that finished more than retention_import_seconds ago (0: kept for ever) are
    # deleted, and a deleted import's at once; each catalog keeps its last
    # retention_keep_versions versions (0: all) and loses table files no version
    # references once they are retention_orphan_hours old (above the longest import: an
    # import's files are unreferenced until it commits). A pass deletes at most
    # retention_deletes_per_pass objects and retains at most retention_catalogs_per_pass
    # catalogs; what is left waits for the next pass.
    retention_interval_seconds: float = Field(600.0, ge=0)
    retention_import_seconds: float = Field(7 * 86400.0, ge=0)
    retention_keep_versions: int = Field(10, ge=0)
    retention_orphan_hours: int = Field(24, ge=1)
    retention_deletes_per_pass: int = Field(1000, ge=1)
    retention_catalogs_per_pass: int = Field(20, ge=0)
    # Webhook signatures: each namespace's key is derived from this one (notify.py).
    # Unset, a random key is made at start, and receivers' keys change with each restart.
    webhook_signing_key: SecretStr | None = None
    # Mail at the end of an import (spec.notify.email), sent over SMTP (operator/mail.py).
    # No host: nothing is sent, and every import that asks for mail records a Warning
    # Event EmailNotConfigured instead. STARTTLS on (the default) refuses a server that
    # does not offer it: the password and the message never cross the network in clear.
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "productimport@localhost"
    # One attempt's deadline (connect, dialogue, upload); three attempts at most.
    smtp_timeout_seconds: float = Field(20.0, gt=0)
    # The upload API's public base URL (https://imports.example.com), for the error
    # report's link in a mail; unset, the mail names the API path only.
    api_url: str | None = None

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]

    @property
    def minio(self) -> MinioSettings:
        return MinioSettings()

    def signing_key(self) -> bytes:
        if self.webhook_signing_key is None:
            log.warning(
                "PRODUCTIMPORT_OPERATOR_WEBHOOK_SIGNING_KEY is not set: the webhook "
                "signing keys change when the operator restarts"
            )
            self.webhook_signing_key = SecretStr(secrets.token_hex(32))
        return self.webhook_signing_key.get_secret_value().encode()

    @property
    def egress(self) -> EgressSettings:
        """Outbound requests (URL sources, webhooks): PRODUCTIMPORT_EGRESS_*."""
        return EgressSettings()
