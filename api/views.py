"""Read a ProductImport's status the same way for every API surface.

The operator is the only writer of status; a resource it has not seen yet has none,
which every surface shows as queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from productimport.models.resource import ANNOTATION_CANCEL, ANNOTATION_REQUEST_ID, LABEL_CATALOG

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "Queued",
    "Running",
    "Succeeded",
    "Failed",
    "Cancelled",
)
TERMINAL = {SUCCEEDED, FAILED, CANCELLED}


@dataclass
class ImportView:
    name: str
    namespace: str
    uid: str
    catalog: str
    phase: str
    created: str | None
    started: str | None
    completed: str | None
    updated: str | None
    message: str | None
    counts: dict[str, int] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    catalog_version: int | None = None
    errors_ref: str | None = None
    progress: dict[str, Any] | None = None
    dry_run: bool = False
    request_id: str | None = None
    cancel_requested: bool = False
    reason: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


def _condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def view(obj: dict[str, Any]) -> ImportView:
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    status = obj.get("status", {}) or {}
    conditions = list(status.get("conditions") or [])
    phase = status.get("phase") or QUEUED
    succeeded = _condition(conditions, "Succeeded")
    reason = (succeeded or {}).get("reason") or (_condition(conditions, "Ready") or {}).get(
        "reason"
    )
    if reason == "Cancelled":
        phase = CANCELLED
    times = [c.get("lastTransitionTime") for c in conditions if c.get("lastTransitionTime")]
    annotations = meta.get("annotations") or {}
    return ImportView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        catalog=spec.get("catalog") or (meta.get("labels") or {}).get(LABEL_CATALOG, ""),
        phase=phase,
        created=meta.get("creationTimestamp"),
        started=status.get("startTime"),
        completed=status.get("completionTime"),
        updated=max([*times, meta.get("creationTimestamp") or ""]) or None,
        message=status.get("message"),
        counts=dict(status.get("counts") or {}),
        conditions=conditions,
        catalog_version=status.get("catalogVersion"),
        errors_ref=status.get("errorsRef"),
        progress=status.get("progress"),
        dry_run=bool(spec.get("dryRun")),
        request_id=annotations.get(ANNOTATION_REQUEST_ID),
        cancel_requested=annotations.get(ANNOTATION_CANCEL) == "true",
        reason=reason,
        annotations=annotations,
    )
