"""The outcome webhook (spec.notify.webhook): one signed POST after the terminal status.

At most once: the status is written first, so a crash in between loses the notification
rather than sending a second one. Deliveries run on a small thread pool, off the
reconciler and its catalog lock, each attempt under the egress policy and its deadline
(productimport/egress.py): a slow or hostile receiver delays only its own notification.

Receivers verify a delivery with their namespace's signing key, which the operator keeps
in the Secret `productimport-webhook-signing` (key `key`) of that namespace:

    X-ProductImport-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>

The key is derived from the operator's own secret and the namespace, so one namespace's
key says nothing about another's, and it is the same after a restart of the operator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from productimport import egress

log = logging.getLogger(__name__)
ATTEMPTS = 3
SIGNING_SECRET = "productimport-webhook-signing"
SIGNATURE_HEADER = "X-ProductImport-Signature"
# A receiver's answer is never read beyond its status line and this much body.
MAX_ANSWER_BYTES = 64 * 1024


def namespace_key(master: bytes, namespace: str) -> str:
    """The signing key of one namespace (hex; receivers use its text as the HMAC key)."""
    return hmac.new(master, f"productimport-webhook:{namespace}".encode(), "sha256").hexdigest()


def signature(key: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def outcome(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
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


class Notifier:
    """Posts outcomes in the background; `failed` is told why a delivery gave up."""

    def __init__(
        self,
        master_key: bytes,
        settings: egress.EgressSettings,
        failed: Callable[[dict[str, Any], str], None],
        workers: int = 4,
    ) -> None:
        self._master = master_key
        self._client = egress.Client(settings)
        self._deadline = settings.webhook_deadline_seconds
        self._failed = failed
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="webhook")

    def key(self, namespace: str) -> str:
        return namespace_key(self._master, namespace)

    def submit(self, url: str, obj: dict[str, Any], status: dict[str, Any]) -> Future[bool]:
        return self._pool.submit(self._deliver, url, obj, status)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _deliver(self, url: str, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        body = json.dumps(outcome(obj, status), separators=(",", ":")).encode()
        key = self.key(obj["metadata"]["namespace"])
        why = "no attempt was made"
        for attempt in range(1, ATTEMPTS + 1):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "productimport-operator",
                "X-ProductImport-Delivery": obj["metadata"]["uid"],
                SIGNATURE_HEADER: signature(key, int(time.time()), body),
            }
            try:
                with self._client.request(
                    "POST",
                    url,
                    body=body,
                    headers=headers,
                    deadline_seconds=self._deadline,
                    max_bytes=MAX_ANSWER_BYTES,
                ) as answer:
                    if 200 <= answer.status < 300:
                        return True
                    why = f"{url} answered {answer.status} {answer.reason}".rstrip()
                    if answer.status < 500 and answer.status != 429:
                        break  # the receiver refuses this delivery; asking again won't help
            except egress.Refused as exc:
                why = str(exc)
                break
            except egress.EgressError as exc:
                why = str(exc)
            log.warning("webhook %s attempt %d failed: %s", url, attempt, why)
            if attempt < ATTEMPTS:
                time.sleep(attempt)
        self._failed(obj, why)
        return False
