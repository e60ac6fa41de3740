"""The outcome webhook (spec.notify.webhook): one POST after the terminal status is written.

At most once: the status is written first, so a crash in between loses the notification
rather than sending a second one; failures are retried briefly and then logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

log = logging.getLogger(__name__)
ATTEMPTS = 3


def post_outcome(url: str, obj: dict[str, Any], status: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    body = {
        "kind": "ProductImport",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "catalog": obj["spec"]["catalog"],
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "counts": status.get("counts"),
        "catalogVersion": status.get("catalogVersion"),
        "errorsRef": status.get("errorsRef"),
    }
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = httpx.post(url, json=body, timeout=10)
            if response.status_code < 500:
                return response.is_success
        except httpx.HTTPError as exc:
            log.warning("webhook %s attempt %d failed: %s", url, attempt, exc)
        time.sleep(attempt)
    return False
