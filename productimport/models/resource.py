"""The ProductImport custom resource: spec and status as pydantic models.

These models are the single source of the CRD: crds/productimport.yaml is generated from
them (`python -m productimport.models.crd`), and a test fails when the committed YAML
and the models differ. CEL rules that only the API server can enforce are attached here
as `x-kubernetes-validations`, so they live beside the fields they guard.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from productimport.engine.catalog import NAME_PATTERN
from productimport.engine.options import CsvOptions, ErrorPolicy, InputFormat, Mode, Preset
from productimport.models.product import ErrorRecord, ImportCounts

GROUP = "catalog.productimport.dev"
VERSION = "v1alpha1"
KIND = "ProductImport"
PLURAL = "productimports"
SINGULAR = "productimport"
SHORT_NAMES = ("pi",)

# Labels and annotations the API, the operator and users share (docs/api.md).
LABEL_CATALOG = f"{GROUP}/catalog"  # every ProductImport the API creates, and every Job
LABEL_IMPORT = f"{GROUP}/import"  # a Job: the ProductImport it runs
LABEL_API = f"{GROUP}/api"  # which API family created the resource (native, saas, pcm)
ANNOTATION_CANCEL = f"{GROUP}/cancel-requested"  # "true": cancel while still queued
ANNOTATION_REQUEST_ID = f"{GROUP}/request-id"
ANNOTATION_UPLOADED_BY = f"{GROUP}/uploaded-by"
ANNOTATION_FILENAME = f"{GROUP}/original-filename"
ANNOTATION_NOTIFY_EMAIL = f"{GROUP}/notify-email"
# The operator's: how many merge Pods the import runs with, decided once (docs/scaling.md).
ANNOTATION_MERGE_PODS = f"{GROUP}/merge-pods"

IMMUTABLE_SPEC_MESSAGE = (
    "spec is immutable: an import runs once; to import again, create a new ProductImport "
    "with a new metadata.name"
)


def _validations(*rules: tuple[str, str]) -> dict:
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(BaseModel):
    # Unknown fields are refused by the API server's structural schema too; here they
    # are refused so a typo in code fails loudly instead of being pruned.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectSource(_Model):
    """An object in the configured MinIO (or S3-compatible store)."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    key: str = Field(min_length=1, max_length=1024)


class Source(_Model):
    """Where the product file is: exactly one of `object` and `url`."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            (
                "[has(self.object), has(self.url)].exists_one(x, x)",
                "exactly one of source.object and source.url must be set",
            )
        )
    )

    object: ObjectSource | None = None
    url: str | None = Field(
        None, max_length=2048, pattern=r"^https://", description="An https:// URL to fetch."
    )


class Notify(_Model):
    """Who hears about the outcome once the import has finished."""

    webhook: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://",
        description="POSTed a signed JSON summary (name, phase, reason, counts) when the "
        "import ends; https to a public address unless the administrator allows more "
        "(docs/operations.md, Webhooks).",
    )
    email: str | None = Field(
        None,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="Mailed a plain-text summary (phase, reason, counts, the first "
        "errors, where the full error report is) when the import ends, by the operator's "
        "SMTP server; without one, a Warning Event EmailNotConfigured says nothing was sent "
        "(docs/operations.md, Email).",
    )


Quantity = int | str


class ResourceList(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None
    ephemeral_storage: Quantity | None = Field(
        None,
        alias="ephemeral-storage",
        description="Disk for the download, decompression and DuckDB's spill files (the "
        "Job's /tmp is sized to the limit).",
    )


class JobResources(_Model):
    requests: ResourceList | None = None
    limits: ResourceList | None = None


class JobSettings(_Model):
    """Knobs for the import Job; anything unset takes the operator's defaults."""

    resources: JobResources | None = None
    threads: int | None = Field(None, ge=1, le=64, description="DuckDB threads (parallelism).")
    memoryLimit: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="DuckDB memory_limit inside the Job, e.g. 512MB (spills to disk beyond).",
    )
    activeDeadlineSeconds: int | None = Field(None, ge=1)
    parallelism: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Pods that merge the file's buckets side by side (docs/scaling.md): "
        "1 runs the import in one Pod; above 1 it is prepared, merged by an Indexed Job of "
        "this many Pods and committed once. Unset: the operator's default, for files above "
        "its size threshold.",
    )


class ProductImportSpec(_Model):
    """What to import, into which catalog, and how."""

    model_config = ConfigDict(
        json_schema_extra=_validations(("self == oldSelf", IMMUTABLE_SPEC_MESSAGE))
    )

    catalog: str = Field(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN.pattern,
        description="The target catalog inside the resource's namespace.",
    )
    source: Source
    format: InputFormat | None = Field(
        None, description="csv, json or jsonl (gzip allowed); default: from the file name."
    )
    csv: CsvOptions | None = None
    preset: Preset = Preset.native
    mapping: dict[str, str] | None = Field(
        None, description="Explicit source column -> product field overrides of the preset."
    )
    mode: Mode = Field(
        Mode.upsert, description="upsert | create | update | replace (replace deletes)."
    )
    dryRun: bool = Field(False, description="Validate and compute the diff; commit nothing.")
    errorPolicy: ErrorPolicy | None = None
    notify: Notify | None = None
    job: JobSettings | None = None


class Phase(StrEnum):
    Queued = "Queued"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"


class ConditionType(StrEnum):
    Ready = "Ready"
    Reconciling = "Reconciling"
    Stalled = "Stalled"
    Succeeded = "Succeeded"


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field("", max_length=32768)
    lastTransitionTime: datetime
    observedGeneration: int | None = Field(None, ge=0)


class Progress(_Model):
    stage: str
    rowsRead: int | None = None
    updatedAt: datetime | None = None


class ProductImportStatus(_Model):
    """Written by the operator only. `phase` is derived from the conditions."""

    phase: Phase | None = None
    conditions: list[Condition] | None = None
    observedGeneration: int | None = None
    jobName: str | None = None
    attempts: int | None = Field(None, description="Pods the Job has started so far.")
    startTime: datetime | None = None
    completionTime: datetime | None = None
    counts: ImportCounts | None = None
    catalogVersion: int | None = None
    errorsRef: str | None = Field(None, description="The full row-level error report (CSV).")
    errors: list[ErrorRecord] | None = Field(None, description="The first few error records.")
    progress: Progress | None = None
    queuePosition: int | None = Field(
        None,
        description=(
            "While it waits: its place in its catalog's queue (1: next), or among the "
            "imports waiting for a running slot. Refreshed in bounded batches, front first; "
            "a figure not refreshed yet is an upper bound."
        ),
    )
    reason: str | None = None
    message: str | None = None


class ProductImport(_Model):
    apiVersion: Literal["catalog.productimport.dev/v1alpha1"] = f"{GROUP}/{VERSION}"
    kind: Literal["ProductImport"] = KIND
    metadata: dict = Field(default_factory=dict)
    spec: ProductImportSpec
    status: ProductImportStatus | None = None
