"""The status document for each state of an import: conditions first, phase derived.

Kubernetes API conventions and kstatus (Flux) read `Reconciling`, `Stalled` and `Ready`;
Argo CD reads them through the Lua health check in the chart. `phase` exists for
`kubectl get` and is computed from the conditions here, never branched on elsewhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from productimport.models.resource import ConditionType, Phase

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
# Reconciling reasons of an import that has not started (phase Queued).
QUEUED_REASONS = (
    "Queued", "WaitingForStore", "WaitingForSlot", "WaitingForLoader", "JobNotCreated"
)  # fmt: skip


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    type_: ConditionType,
    status: str,
    reason: str,
    message: str,
    generation: int,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    # lastTransitionTime only moves when the status value changes (API conventions).
    old = next((c for c in previous if c.get("type") == type_.value), None)
    moved = old is None or old.get("status") != status
    return {
        "type": type_.value,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": now() if moved else old["lastTransitionTime"],
        "observedGeneration": generation,
    }


def phase_of(conditions: list[dict[str, Any]]) -> Phase:
    by_type = {c["type"]: c["status"] for c in conditions}
    if by_type.get("Succeeded") == TRUE:
        return Phase.Succeeded
    if by_type.get("Stalled") == TRUE or by_type.get("Succeeded") == FALSE:
        return Phase.Failed
    reasons = {c["type"]: c.get("reason") for c in conditions}
    # Not started yet: behind another import of the catalog, without its credentials,
    # without a running slot, behind a loader Pod of its catalog that has not ended yet,
    # or its Job refused by the API server (retried).
    if reasons.get("Reconciling") in QUEUED_REASONS:
        return Phase.Queued
    return Phase.Running


def conditions_for(
    state: str, reason: str, message: str, generation: int, previous: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """state: queued | running | succeeded | failed."""
    c = lambda t, s: _condition(t, s, reason, message, generation, previous)  # noqa: E731
    if state in ("queued", "running"):
        return [c(ConditionType.Reconciling, TRUE), c(ConditionType.Ready, UNKNOWN)]
    if state == "succeeded":
        return [c(ConditionType.Ready, TRUE), c(ConditionType.Succeeded, TRUE)]
    if state == "failed":
        return [
            c(ConditionType.Ready, FALSE),
            c(ConditionType.Succeeded, FALSE),
            c(ConditionType.Stalled, TRUE),
        ]
    raise ValueError(f"unknown state {state!r}")


def status_patch(
    state: str, reason: str, message: str, obj: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """A merge patch for the status subresource. Conditions are replaced as a whole, so a
    condition that no longer applies (Reconciling after success) disappears."""
    generation = int(obj["metadata"].get("generation", 1))
    previous = (obj.get("status") or {}).get("conditions") or []
    conditions = conditions_for(state, reason, message, generation, previous)
    return {
        "status": {
            "conditions": conditions,
            "phase": phase_of(conditions).value,
            "observedGeneration": generation,
            "reason": reason,
            "message": message,
            **fields,
        }
    }


def is_terminal(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return phase_of(status.get("conditions") or []) in (Phase.Succeeded, Phase.Failed) and bool(
        status.get("conditions")
    )
