"""The import Job for a ProductImport: a pure function of the resource and the settings.

The Job runs the very command a developer runs on a laptop (docs/loader-contract.md),
against MinIO. Its name is derived from the resource (name + UID prefix), so however
often the operator restarts, one resource can only ever have one Job.
"""

from __future__ import annotations

import hashlib
from typing import Any

from productimport.engine.catalog import ROWS_PER_BUCKET_ENV
from productimport.engine.errors import EXIT_BAD_DATA, EXIT_RESOURCES, EXIT_SOURCE_MISSING
from productimport.models.resource import (
    ANNOTATION_MERGE_PODS,
    GROUP,
    KIND,
    LABEL_CATALOG,
    LABEL_IMPORT,
    VERSION,
    ProductImportSpec,
)
from productimport.operator.queue import sequence_of
from productimport.operator.settings import OperatorSettings

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "productimport-operator"
CONTAINER = "loader"
# 128 + SIGKILL: how a container ends when the kernel's OOM killer stops it at its memory
# limit (the kubelet then reports reason OOMKilled). Evictions and preemptions SIGKILL too,
# but they carry the DisruptionTarget condition, which the first rule ignores.
EXIT_KILLED = 137


def job_name(obj: dict[str, Any], step: str = "import") -> str:
    """At most 63 characters (the job-name label), unique per resource UID: the import's
    Job (a partitioned import's last step, commit), or its `prepare` or `merge` Job."""
    meta = obj["metadata"]
    digest = hashlib.sha256(meta["uid"].encode()).hexdigest()[:8]
    return f"{meta['name'][:45].rstrip('-.')}-{step}-{digest}"


def merge_pods(obj: dict[str, Any]) -> int:
    """The merge Pods the operator gave the import when it admitted it (1: one Pod)."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_MERGE_PODS)
    return int(value) if value and value.isdigit() and int(value) > 1 else 1


# A partitioned import's steps, in order, and the loader's --stage for each; a one-Pod
# import is its last step alone, under the same Job name.
STEPS = ("prepare", "merge", "commit")


def steps(obj: dict[str, Any]) -> list[str]:
    return list(STEPS) if merge_pods(obj) > 1 else ["all"]


def step_job_name(obj: dict[str, Any], step: str) -> str:
    return job_name(obj, step) if step in ("prepare", "merge") else job_name(obj)


def step_of(obj: dict[str, Any], job: dict[str, Any]) -> str:
    """Which of the import's steps a Job of it runs."""
    name = job["metadata"]["name"]
    return next((s for s in steps(obj) if step_job_name(obj, s) == name), steps(obj)[-1])


def loader_args(
    obj: dict[str, Any], spec: ProductImportSpec, settings: OperatorSettings, step: str = "all"
) -> list[str]:
    src = spec.source
    source = f"s3://{src.object.bucket}/{src.object.key}" if src.object else str(src.url)
    meta = obj["metadata"]
    args = [
        "import", source,
        "--catalog", spec.catalog,
        "--namespace", meta["namespace"],
        "--store", settings.store,
        "--import-id", meta["uid"],
        "--preset", spec.preset.value,
        "--mode", spec.mode.value,
        "--json",
    ]  # fmt: skip
    sequence = sequence_of(obj)
    if sequence is not None:
        args += ["--sequence", str(sequence)]
    if spec.format:
        args += ["--format", spec.format.value]
    if spec.dryRun:
        args.append("--dry-run")
    for column, field in (spec.mapping or {}).items():
        args += ["--mapping", f"{column}={field}"]
    if spec.errorPolicy:
        if spec.errorPolicy.maxErrors is not None:
            args += ["--max-errors", str(spec.errorPolicy.maxErrors)]
        if spec.errorPolicy.maxErrorRatio is not None:
            args += ["--max-error-ratio", str(spec.errorPolicy.maxErrorRatio)]
    if spec.csv:
        csv = spec.csv
        if csv.delimiter:
            args += ["--delimiter", csv.delimiter]
        args += ["--quote", csv.quote, "--encoding", csv.encoding]
        if csv.escape:
            args += ["--escape", csv.escape]
        if not csv.header:
            args.append("--no-header")
    job = spec.job
    threads = (job.threads if job else None) or settings.default_threads
    if threads:
        args += ["--threads", str(threads)]
    memory = (job.memoryLimit if job else None) or settings.default_duckdb_memory_limit
    if memory:
        args += ["--memory-limit", memory]
    if step != "all":  # the merge Pod's own number comes from JOB_COMPLETION_INDEX
        args += ["--stage", step, "--workers", str(merge_pods(obj))]
    return args


def _resources(spec: ProductImportSpec, settings: OperatorSettings) -> dict[str, Any]:
    requests: dict[str, Any] = {
        "cpu": settings.default_cpu_request,
        "memory": settings.default_memory_request,
    }
    limits: dict[str, Any] = {
        "memory": settings.default_memory_limit,
        "ephemeral-storage": settings.default_tmp_size,
    }
    wanted = spec.job.resources if spec.job and spec.job.resources else None
    for have, asked in ((requests, wanted and wanted.requests), (limits, wanted and wanted.limits)):
        if asked:
            # Quantities may be written as numbers (cpu: 1); the API wants strings.
            dumped = asked.model_dump(exclude_none=True, by_alias=True)
            have.update({k: str(v) for k, v in dumped.items()})
    return {"requests": requests, "limits": limits}


def build_job(obj: dict[str, Any], settings: OperatorSettings, step: str = "all") -> dict[str, Any]:
    """The Job of one step of the import (`all`: the whole import, in one Pod)."""
    spec = ProductImportSpec.model_validate(obj["spec"])
    meta = obj["metadata"]
    name = step_job_name(obj, step)
    labels = {
        LABEL_CATALOG: spec.catalog,
        LABEL_IMPORT: meta["name"][:63].rstrip("-._"),
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "productimport",
        "app.kubernetes.io/component": "loader",
    }
    resources = _resources(spec, settings)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The loader talks to MinIO only: it gets no Kubernetes credentials at all.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The Pod's pause process is PID 1, not the loader: a PID 1 ignores a SIGTERM it
        # has no handler for, and a cancel that deletes the Job as its Pod starts sends
        # one before the loader has set its handler; the loader then ran on to a commit
        # (CommittedBeforeCancel, seen in CI). Not PID 1, it ends at once. The Pod has one
        # container, so sharing its process namespace shows no one anything.
        "shareProcessNamespace": True,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": list(settings.loader_command),
                "args": loader_args(obj, spec, settings, step),
                # Its own temporary credentials (operator/credentials.py), named as the
                # import's Job (every step of a partitioned import uses the same).
                "envFrom": [{"secretRef": {"name": job_name(obj)}}],
                "env": [
                    {"name": "TMPDIR", "value": "/tmp"},
                    # The administrator's outbound policy for URL sources (productimport/
                    # egress.py): the loader enforces it where it connects.
                    *({"name": k, "value": v} for k, v in settings.egress.environment().items()),
                    *(
                        [{"name": ROWS_PER_BUCKET_ENV, "value": str(settings.rows_per_bucket)}]
                        if settings.rows_per_bucket
                        else []
                    ),
                ],
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                # Downloads, decompressed copies and DuckDB's spill files go here.
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        # Sized to the container's ephemeral-storage limit: the kubelet evicts a loader
        # that fills it (the operator then fails the import with reason
        # DiskLimitExceeded) instead of letting it fill the node's disk.
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": resources["limits"]["ephemeral-storage"]}}
        ],
    }
    if settings.loader_service_account:
        pod_spec["serviceAccountName"] = settings.loader_service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit,
        # TTL on the Job only, never on the ProductImport: a GitOps tool would re-create a
        # deleted ProductImport and import the file a second time.
        "ttlSecondsAfterFinished": settings.job_ttl_seconds,
        "podFailurePolicy": {
            "rules": [
                # A node drain or preemption is not the import's fault: do not count it.
                # (First: the rules are matched in order, and a drained Pod is SIGKILLed.)
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                # Bad data, a missing source, a file too big for DuckDB's memory limit, or
                # a container killed at its memory limit: the same input and the same
                # limits fail the same way again, so fail at once.
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [
                            EXIT_BAD_DATA,
                            EXIT_SOURCE_MISSING,
                            EXIT_RESOURCES,
                            EXIT_KILLED,
                        ],
                    },
                },
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if step == "merge":
        # Kubernetes gives each Pod its number (JOB_COMPLETION_INDEX) and runs them side
        # by side; the Job completes when every number has completed once.
        pods = merge_pods(obj)
        job_spec.update(completionMode="Indexed", completions=pods, parallelism=pods)
    job_spec["activeDeadlineSeconds"] = (
        spec.job.activeDeadlineSeconds if spec.job and spec.job.activeDeadlineSeconds
        else settings.default_active_deadline_seconds
    )  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
