"""Each catalog's queue of imports, kept in memory from the operator's watch.

The queue used to be read with a LIST of the namespace's ProductImports and of the
catalog's Jobs on every pass of every waiting import: work that grew with the square of
the queue. Here kopf's watch stream (its initial listing included, so a restarted
operator rebuilds the same queues) feeds `observe`, and a pass reads the queue from
memory. Nothing here is the truth: the API server is. The reconciler still checks the
catalog's Jobs once before it starts an import, so a stale queue can delay an import,
never run two in one catalog.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from productimport.engine.catalog import METADATA_KEY, RECENT_COMMITS, Catalog, _delta_errors
from productimport.models.resource import GROUP
from productimport.operator.conditions import is_terminal

# Fencing (docs/operations.md): the operator numbers a catalog's imports in the order it
# lets them run, and keeps each number here on the import (kept once set: a Job created
# again for the same import runs with the same number). The loader records it in its
# commit and refuses to commit over a commit with a higher one.
ANNOTATION_SEQUENCE = f"{GROUP}/sequence"


def sequence_of(obj: dict[str, Any]) -> int | None:
    """The import's fencing sequence, once the operator has admitted it."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SEQUENCE)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def committed_sequence(catalog: Catalog) -> int:
    """The sequence of the catalog's newest numbered commit among its recent ones (0:
    none; sequences only grow, so it is the highest), so numbers keep growing when the
    ProductImports that carried them have been deleted. Raises the engine's
    TemporaryFailure when the store does not answer."""
    table = catalog.open_table()
    if table is None:
        return 0
    for limit in (1, RECENT_COMMITS):  # nearly always the latest commit has one
        with _delta_errors(f"reading the history of {catalog.table_ref}"):
            entries = table.history(limit)
        for entry in entries:
            raw = entry.get(METADATA_KEY)
            record = (json.loads(raw) if isinstance(raw, str) else dict(raw)) if raw else {}
            if record.get("sequence") is not None:
                return int(record["sequence"])
        if len(entries) < limit:
            break  # that was the whole history
    return 0


@dataclass(frozen=True)
class Waiting:
    """A non-terminal import, as much of it as the queue needs."""

    namespace: str
    catalog: str
    name: str
    uid: str
    created: str  # creationTimestamp: the queue's order (ties: the name)
    has_job: bool  # the operator has started it (status.jobName)

    @classmethod
    def of(cls, obj: dict[str, Any], has_job: bool | None = None) -> Waiting:
        meta = obj["metadata"]
        return cls(
            namespace=meta["namespace"],
            catalog=(obj.get("spec") or {}).get("catalog", ""),
            name=meta["name"],
            uid=meta["uid"],
            created=meta.get("creationTimestamp", ""),
            has_job=bool((obj.get("status") or {}).get("jobName")) if has_job is None else has_job,
        )

    @property
    def order(self) -> tuple[str, str]:
        return self.created, self.name


def holder_and_queue(waiting: list[Waiting]) -> tuple[Waiting | None, list[Waiting]]:
    """The import allowed to run, and the queue behind it: an import that has a Job holds
    its catalog until it is terminal; otherwise the oldest gets it."""
    ordered = sorted(waiting, key=lambda w: w.order)
    holder = next((w for w in ordered if w.has_job), ordered[0] if ordered else None)
    return holder, [w for w in ordered if w is not holder]


class ImportQueues:
    """The non-terminal ProductImports of every catalog, from the watch stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, Waiting] = {}

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """One watch event (or one object of the initial listing)."""
        uid = obj["metadata"]["uid"]
        gone = deleted or obj["metadata"].get("deletionTimestamp") or is_terminal(obj)
        with self._lock:
            if gone:
                self._by_uid.pop(uid, None)
            else:
                self._by_uid[uid] = Waiting.of(obj)

    def forget(self, uid: str) -> None:
        """The import ended (before its watch event says so)."""
        with self._lock:
            self._by_uid.pop(uid, None)

    def waiting(self, namespace: str, catalog: str) -> list[Waiting]:
        with self._lock:
            return [
                w for w in self._by_uid.values() if (w.namespace, w.catalog) == (namespace, catalog)
            ]

    def heads(self) -> list[Waiting]:
        """The import each catalog should be running now (for the periodic resync)."""
        with self._lock:
            catalogs: dict[tuple[str, str], list[Waiting]] = {}
            for w in self._by_uid.values():
                catalogs.setdefault((w.namespace, w.catalog), []).append(w)
        return [h for h, _ in map(holder_and_queue, catalogs.values()) if h is not None]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)
