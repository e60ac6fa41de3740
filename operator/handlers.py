"""Kopf wiring: which events start a reconcile pass (operator/reconcile.py does the work).

- a ProductImport is created: a pass at once (apply-to-Job latency);
- a managed Job changes: a pass for its owner (progress, completion);
- every few seconds for each non-terminal ProductImport: a pass (a safety net that also
  makes restarts, missed events and a recovered MinIO converge).
Handler state lives in annotations under the project's own prefix, with its own
finalizer name (configured in `configure`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from productimport.engine.errors import TemporaryFailure
from productimport.models.resource import GROUP, PLURAL, VERSION
from productimport.operator.conditions import is_terminal
from productimport.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from productimport.operator.reconcile import Reconciler
from productimport.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
_state: dict[str, Any] = {}


def install(reconciler: Reconciler, settings: OperatorSettings) -> None:
    _state["reconciler"] = reconciler
    _state["settings"] = settings


async def _pass(namespace: str, name: str) -> None:
    try:
        await asyncio.to_thread(_state["reconciler"].reconcile, namespace, name)
    except TemporaryFailure as exc:
        raise kopf.TemporaryError(str(exc), delay=_state["settings"].poll_seconds) from exc


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our own Events tell the story (JobCreated, ImportSucceeded, …); kopf's per-handler
    # "Handler succeeded" Events would only drown them.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


def _not_terminal(body: kopf.Body, **_: Any) -> bool:
    return not is_terminal(dict(body))


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=5)
async def on_create(namespace: str, name: str, **_: Any) -> None:
    await _pass(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=3.0, initial_delay=1.0, when=_not_terminal, backoff=5)
async def on_timer(namespace: str, name: str, **_: Any) -> None:
    await _pass(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def on_job_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    # Event handlers are not retried: a failed pass here is picked up by the timer.
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("apiVersion") == f"{GROUP}/{VERSION}" and ref.get("controller"):
            await _pass(namespace, ref["name"])
