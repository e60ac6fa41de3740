"""Kopf wiring: which events start a reconcile pass (operator/reconcile.py does the work).

- every ProductImport watch event (the initial listing included) updates the catalogs'
  queues in memory (operator/queue.py): waiting costs no API call;
- a ProductImport is created, asked to cancel, or found at start-up: a pass, run by
  the operator's own bounded pass queue (PassQueue; not kopf's change handlers, which
  hold every object's body until its handler has run, and annotate every object);
- a managed Job changes: a pass for its owner (progress, completion);
- every `poll_seconds` (3), a pass for each import that has a Job (progress, and a safety
  net for a missed Job event), from the operator's own loop, not kopf timers (see
  poll_running_once). A queued import costs nothing: the import before it starts it
  when it ends (Reconciler._start_next);
- every `queue_resync_seconds`, the head of each catalog's queue that has not started:
  a pass (one pass per catalog, not per import: a start that failed on a store outage,
  or a missed wake-up, converges); then the waiting imports' queue positions, a bounded
  number of writes (Reconciler.refresh_positions);
- every `retention_interval_seconds`, a retention pass (operator/retention.py) in the
  sweeper's own thread; a ProductImport's DELETED event hands it to the sweeper too (its
  documents go at once, its source in the next pass). No finalizer: deleting an import
  never waits for the operator, and what a missed event leaves, a pass finds.
kopf writes nothing to the imports: event handlers keep no per-object state.

The reconciler and the settings reach the handlers through kopf's `memo`: main.py passes
the operator's memo to kopf.run (see `operator_memo`), and kopf gives each resource
object a shallow copy of it, so every handler sees the same Reconciler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from productimport.engine.errors import TemporaryFailure
from productimport.engine.storecheck import StoreUnfit, check_conditional_writes
from productimport.models.resource import ANNOTATION_CANCEL, GROUP, PLURAL, VERSION
from productimport.operator.conditions import is_terminal
from productimport.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from productimport.operator.reconcile import Reconciler
from productimport.operator.retention import Sweeper
from productimport.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
WORKER_LIMIT = 100  # kopf's per-object workers at once (see configure)


def operator_memo(reconciler: Reconciler, settings: OperatorSettings) -> kopf.Memo:
    """The operator's memo (kopf.run(memo=...)): what every handler needs."""
    memo = kopf.Memo(reconciler=reconciler, settings=settings)
    memo.passes = PassQueue(memo)
    return memo


async def _pass(memo: kopf.Memo, namespace: str, name: str) -> None:
    """One reconcile pass, in a worker thread (it blocks on API calls)."""
    await asyncio.to_thread(memo.reconciler.reconcile, namespace, name)


class PassQueue:
    """The passes the watch asks for, by import (namespace, name), run by `pass_workers`
    tasks: a key waits here once however often it is asked for.

    Not kopf's change handlers: kopf holds each object's events (its whole body, several
    KB each) until a handler has run for it, so 10,000 imports applied at once would sit
    in the operator's memory as bodies for as long as their passes take (minutes at the
    API server's pace), and kopf would write an annotation to every import to track its
    handlers. Here an event costs an in-memory update and, when it wants a pass, a key.
    A pass that fails for a passing reason (the store or the API server away) is asked
    for again after `poll_seconds`."""

    def __init__(self, memo: kopf.Memo) -> None:
        self._memo = memo
        self._keys: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._asked: set[tuple[str, str]] = set()
        self._workers: list[asyncio.Task[None]] = []

    def ask(self, namespace: str, name: str) -> None:
        """A pass over this import soon (kopf's event loop only)."""
        key = (namespace, name)
        if key not in self._asked:
            self._asked.add(key)
            self._keys.put_nowait(key)

    def __len__(self) -> int:
        return len(self._asked)

    def start(self) -> None:
        workers = self._memo.settings.pass_workers
        self._workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    def stop(self) -> None:
        for task in self._workers:
            task.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._keys.get()
            self._asked.discard(key)  # asked again while it runs: one more pass after
            try:
                await _pass(self._memo, *key)
            except Exception as exc:
                if not isinstance(exc, TemporaryFailure):
                    log.exception("pass over %s/%s", *key)
                else:
                    log.warning("pass over %s/%s: %s; again in %.0fs", *key, exc,
                                self._memo.settings.poll_seconds)  # fmt: skip
                loop.call_later(self._memo.settings.poll_seconds, self.ask, *key)


def wants_pass(event_type: str | None, obj: dict[str, Any]) -> bool:
    """Whether a ProductImport watch event asks for a pass: a new import (or one found
    when the operator starts: the initial listing has no type), or a cancel request.
    Never the operator's own status writes, or every pass would ask for another."""
    meta = obj.get("metadata") or {}
    if event_type == "DELETED" or meta.get("deletionTimestamp") or is_terminal(obj):
        return False
    if event_type in (None, "ADDED"):
        return True
    return (meta.get("annotations") or {}).get(ANNOTATION_CANCEL) == "true"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if not isinstance(memo.get("reconciler"), Reconciler):
        # Started as `kopf run` on this module instead of productimport-operator.
        raise kopf.PermanentError(
            "no reconciler in the operator's memo: start the operator with "
            "productimport-operator (operator/main.py), which passes it to kopf.run"
        )
    # Our own Events tell the story (JobCreated, ImportSucceeded, …); kopf's per-handler
    # "Handler succeeded" Events would only drown them.
    settings.posting.enabled = False
    # kopf's per-object workers only run on_import_event (memory, no API call), at most
    # WORKER_LIMIT at once; each object's events wait in kopf's memory, as whole bodies,
    # until a worker takes them. A worker stays idle `idle_timeout` for its object's next
    # event before leaving (kopf: 5 s), holding its slot: 0.1 s lets 100 workers keep up
    # with a flood of thousands of new imports a second, so their bodies do not pile up.
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = 0.1
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.startup()
def check_store(memo: kopf.Memo, **_: Any) -> None:
    """Refuse to run against a store whose conditional writes are not honoured: every
    catalog commit depends on them (engine/storecheck.py)."""
    try:
        check_conditional_writes(memo.reconciler.reports.store, ".productimport/conditional-writes")
    except StoreUnfit as exc:
        raise kopf.PermanentError(exc.message) from exc
    except TemporaryFailure as exc:
        raise kopf.TemporaryError(f"cannot check the store yet: {exc}", delay=5) from exc


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_import_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    obj, kind = dict(body), event.get("type")
    queues = memo.reconciler.queues
    if queues is not None:
        queues.observe(obj, deleted=kind == "DELETED")
    sweeper: Sweeper | None = memo.get("retention")
    if kind == "DELETED" and sweeper is not None:
        sweeper.submit_forget(obj)  # never waited for here: the sweeper's thread
    if wants_pass(kind, obj):
        memo.passes.ask(obj["metadata"]["namespace"], obj["metadata"]["name"])


async def poll_running_once(memo: kopf.Memo) -> None:
    """A pass for every import that has a Job (its progress, and a safety net for a
    missed Job event). Not a kopf timer: with any timer on ProductImports, kopf keeps
    every ProductImport's whole body in memory for it (10,000 waiting imports: hundreds
    of MB), and puts a finalizer on each it runs for."""
    reconciler: Reconciler = memo.reconciler
    if reconciler.queues is None:
        return
    running = reconciler.queues.running()
    results = await asyncio.gather(
        *(_pass(memo, w.namespace, w.name) for w in running), return_exceptions=True
    )
    for w, result in zip(running, results, strict=True):
        if isinstance(result, Exception):  # the next round tries again
            log.warning("pass over %s/%s: %s", w.namespace, w.name, result)


async def resync_once(memo: kopf.Memo) -> None:
    """Start the head of every catalog queue that is not running (one pass per catalog),
    then refresh the queue positions."""
    reconciler: Reconciler = memo.reconciler
    if reconciler.queues is None:
        return
    for head in reconciler.queues.heads():
        if head.has_job:
            continue  # the poll of running imports looks after it
        try:
            await _pass(memo, head.namespace, head.name)
        except Exception as exc:  # one catalog's trouble must not stop the others'
            log.warning("resync of %s/%s: %s", head.namespace, head.name, exc)
    await asyncio.to_thread(reconciler.refresh_positions)


async def _every(seconds: float, what: str, work: Callable[[], Awaitable[None]]) -> None:
    """`work` every `seconds` until cancelled. A failed round (the API server or the
    store away) is logged, and the next round tries again."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception as exc:
            log.warning("%s: %s", what, exc)


@kopf.on.startup()
async def start_loops(memo: kopf.Memo, **_: Any) -> None:
    """The operator's periodic work: its own asyncio tasks, not kopf timers (see
    poll_running_once). Retention passes run in the sweeper's own thread."""
    settings: OperatorSettings = memo.settings
    loops: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
        (settings.poll_seconds, "poll of running imports", lambda: poll_running_once(memo)),
        (settings.queue_resync_seconds, "queue resync", lambda: resync_once(memo)),
    ]
    if settings.retention_interval_seconds:
        if memo.get("retention") is None:
            reconciler: Reconciler = memo.reconciler
            memo.retention = Sweeper.for_operator(
                reconciler.kube, reconciler.reports.store, settings
            )
        sweeper: Sweeper = memo.retention
        loop = asyncio.get_running_loop()

        async def sweep() -> None:
            await loop.run_in_executor(sweeper.executor, sweeper.sweep)

        loops.append((settings.retention_interval_seconds, "retention pass", sweep))
    memo.loops = [asyncio.create_task(_every(*each)) for each in loops]
    memo.passes.start()


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("loops") or []:
        task.cancel()
    memo.passes.stop()
    sweeper: Sweeper | None = memo.get("retention")
    if sweeper is not None:
        sweeper.close()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def on_job_event(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("apiVersion") == f"{GROUP}/{VERSION}" and ref.get("controller"):
            memo.passes.ask(namespace, ref["name"])
