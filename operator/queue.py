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

import heapq
import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from productimport.engine.catalog import RECENT_COMMITS, Catalog
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
    found = catalog.newest_record_with(table, "sequence", depth=RECENT_COMMITS)
    return int(found[1]["sequence"]) if found else 0


@dataclass(frozen=True)
class Waiting:
    """A non-terminal import, as much of it as the queue needs."""

    namespace: str
    catalog: str
    name: str
    uid: str
    created: str  # creationTimestamp: the queue's order (ties: the name)
    has_job: bool  # the operator has started it (status.jobName)
    sequence: int | None = None  # its fencing sequence, once admitted
    position: int | None = None  # status.queuePosition, as last written
    version: str = ""  # metadata.resourceVersion, as last seen
    starting: bool = False  # it took a running slot and its Job is being made

    @property
    def busy(self) -> bool:
        """It holds its catalog and a running slot: it has a Job, or one is being made."""
        return self.has_job or self.starting

    @classmethod
    def of(cls, obj: dict[str, Any], has_job: bool | None = None) -> Waiting:
        meta = obj["metadata"]
        status = obj.get("status") or {}
        return cls(
            namespace=meta["namespace"],
            catalog=(obj.get("spec") or {}).get("catalog", ""),
            name=meta["name"],
            uid=meta["uid"],
            created=meta.get("creationTimestamp", ""),
            has_job=bool(status.get("jobName")) if has_job is None else has_job,
            sequence=sequence_of(obj),
            position=status.get("queuePosition"),
            version=meta.get("resourceVersion", ""),
        )

    @property
    def order(self) -> tuple[str, str]:
        return self.created, self.name


def holder_and_queue(waiting: list[Waiting]) -> tuple[Waiting | None, list[Waiting]]:
    """The import allowed to run, and the queue behind it: an import that has a Job holds
    its catalog until it is terminal; otherwise the oldest gets it."""
    ordered = sorted(waiting, key=lambda w: w.order)
    holder = next((w for w in ordered if w.busy), ordered[0] if ordered else None)
    return holder, [w for w in ordered if w is not holder]


def fair_order(candidates: list[Waiting], running: Counter[str]) -> list[Waiting]:
    """The order in which catalogs waiting for a running slot get one: each next slot
    goes to the namespace with the fewest imports running or already placed before it
    (ties: its oldest waiting import), oldest first within a namespace. A namespace that
    queues a thousand imports gets one slot for each the others get, never the lot."""
    by_namespace: dict[str, list[Waiting]] = {}
    for w in sorted(candidates, key=lambda w: w.order):
        by_namespace.setdefault(w.namespace, []).append(w)
    heap = [(running[ns], queue[0].order, ns, 0) for ns, queue in by_namespace.items()]
    heapq.heapify(heap)
    order: list[Waiting] = []
    while heap:
        load, _, ns, index = heapq.heappop(heap)
        queue = by_namespace[ns]
        order.append(queue[index])
        if index + 1 < len(queue):
            heapq.heappush(heap, (load + 1, queue[index + 1].order, ns, index + 1))
    return order


class ImportQueues:
    """The non-terminal ProductImports of every catalog, from the watch stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, Waiting] = {}
        # The same imports by catalog: a pass reads its catalog's queue without walking
        # every waiting import of the cluster (10,000 of them, once per pass).
        self._by_catalog: dict[tuple[str, str], dict[str, Waiting]] = {}

    def _put(self, w: Waiting) -> None:
        self._drop(w.uid)
        self._by_uid[w.uid] = w
        self._by_catalog.setdefault((w.namespace, w.catalog), {})[w.uid] = w

    def _drop(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is not None:
            catalog = self._by_catalog[(old.namespace, old.catalog)]
            catalog.pop(uid, None)
            if not catalog:
                del self._by_catalog[(old.namespace, old.catalog)]

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """One watch event (or one object of the initial listing)."""
        uid = obj["metadata"]["uid"]
        gone = deleted or obj["metadata"].get("deletionTimestamp") or is_terminal(obj)
        with self._lock:
            if gone:
                self._drop(uid)
                return
            seen, known = Waiting.of(obj), self._by_uid.get(uid)
            if known is not None:
                # An event from before the operator's own writes must not take back what it
                # knows already: a Job made (its status not written yet), a start under way.
                seen = replace(seen, has_job=seen.has_job or known.has_job,
                               starting=known.starting)  # fmt: skip
            self._put(seen)

    def reserve(self, uid: str) -> None:
        """The import takes a running slot before its Job is made (credentials, the
        sequence, the Job: slow work done outside the operator's slot lock, so starts in
        different catalogs overlap); release() gives it back if no Job came of it."""
        self._mark(uid, starting=True)

    def release(self, uid: str) -> None:
        self._mark(uid, starting=False)

    def _mark(self, uid: str, **fields: bool) -> None:
        with self._lock:
            if uid in self._by_uid:
                self._put(replace(self._by_uid[uid], **fields))

    def started(self, uid: str) -> None:
        """The operator created the import's Job (before its watch event says so): it
        takes a running slot now."""
        with self._lock:
            if uid in self._by_uid:
                self._put(replace(self._by_uid[uid], has_job=True, starting=False))

    def _contenders(self, per_namespace: int) -> tuple[Counter[str], list[Waiting]]:
        """Running imports per namespace, and the catalogs' heads waiting for a slot
        (namespaces at their own limit left out)."""
        catalogs = self._catalogs()
        running = Counter(w.namespace for queue in catalogs for w in queue if w.busy)
        heads = [h for h, _ in map(holder_and_queue, catalogs) if h and not h.busy]
        if per_namespace:
            heads = [h for h in heads if running[h.namespace] < per_namespace]
        return running, heads

    def next_to_start(self, limit: int, per_namespace: int) -> list[Waiting]:
        """The heads that get the free running slots now, in order, under the
        cluster-wide limit (0: none) and the per-namespace one (0: none), shared fairly
        between namespaces (fair_order)."""
        running, heads = self._contenders(per_namespace)
        free = limit - sum(running.values()) if limit else len(heads)
        return fair_order(heads, running)[: max(0, free)]

    def slot_for(self, candidate: Waiting, limit: int, per_namespace: int) -> str | None:
        """None if the head of its catalog may start now; else why it waits (a message
        that stays the same while it waits, so its status is not rewritten each pass)."""
        if not limit and not per_namespace:
            return None
        with self._lock:
            known = self._by_uid.get(candidate.uid)
        if known is not None and known.busy:
            return None  # it holds its slot already (its Job is being made again)
        if any(w.uid == candidate.uid for w in self.next_to_start(limit, per_namespace)):
            return None
        running, _ = self._contenders(0)
        if per_namespace and running[candidate.namespace] >= per_namespace:
            return (
                f"waiting for a running slot: namespace {candidate.namespace!r} has "
                f"{per_namespace} imports running, its limit"
            )
        return (
            f"waiting for a running slot: at most {limit} imports run at once in the "
            "cluster, shared fairly between namespaces"
        )

    def positions(self, limit: int, per_namespace: int) -> list[tuple[Waiting, int]]:
        """Where each waiting import stands, front first: behind the import that holds its
        catalog, its place in the catalog's queue (1: next); a catalog's head waiting for
        a running slot, its place in the fair order of the slots (1: the next slot)."""
        placed: list[tuple[Waiting, int]] = []
        for _, queue in map(holder_and_queue, self._catalogs()):
            placed += [(w, i) for i, w in enumerate(queue, start=1)]
        if limit or per_namespace:
            running, heads = self._contenders(0)
            free = max(0, limit - sum(running.values())) if limit else len(heads)
            in_order = fair_order(heads, running)
            placed += [(w, i) for i, w in enumerate(in_order[free:], start=1)]
        return sorted(placed, key=lambda p: p[1])

    def forget(self, uid: str) -> None:
        """The import ended (before its watch event says so)."""
        with self._lock:
            self._drop(uid)

    def running(self) -> list[Waiting]:
        """The imports that have a Job (at most the running limit of them)."""
        with self._lock:
            return [w for w in self._by_uid.values() if w.has_job]

    def waiting(self, namespace: str, catalog: str) -> list[Waiting]:
        with self._lock:
            return list(self._by_catalog.get((namespace, catalog), {}).values())

    def heads(self) -> list[Waiting]:
        """The import each catalog should be running now (for the periodic resync)."""
        return [h for h, _ in map(holder_and_queue, self._catalogs()) if h is not None]

    def _catalogs(self) -> list[list[Waiting]]:
        """Each catalog's waiting imports (a snapshot)."""
        with self._lock:
            return [list(queue.values()) for queue in self._by_catalog.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)
