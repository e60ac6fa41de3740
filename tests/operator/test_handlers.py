"""The kopf handlers reach the reconciler through kopf's memo (no cluster, no kopf.run:
the handlers are called as kopf calls them, with the memo main.py passes to kopf.run)."""

from __future__ import annotations

import asyncio
import threading

import kopf
import pytest

from productimport.engine.errors import TemporaryFailure
from productimport.models.resource import ANNOTATION_CANCEL, GROUP, VERSION
from productimport.operator import handlers
from productimport.operator.queue import ImportQueues
from productimport.operator.reconcile import Reconciler
from productimport.operator.settings import OperatorSettings


class Passes(Reconciler):
    """A Reconciler that only records its passes (and fails them when told)."""

    def __init__(self, fail: bool = False) -> None:  # no seams needed: nothing is reconciled
        self.passes: list[tuple[str, str, bool]] = []
        self.queues = ImportQueues()
        self.fail = fail

    def reconcile(self, namespace: str, name: str) -> None:
        on_loop_thread = threading.current_thread() is threading.main_thread()
        self.passes.append((namespace, name, on_loop_thread))
        if self.fail:
            raise TemporaryFailure("MinIO unavailable while reading: refused")


def _memo(reconciler: Reconciler) -> kopf.Memo:
    return handlers.operator_memo(
        reconciler, OperatorSettings(poll_seconds=7, retention_interval_seconds=0)
    )


def _added(name: str, **meta) -> dict:
    return {"type": "ADDED", "object": {
        "metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}", **meta},
        "spec": {"catalog": "main"}, "status": {}}}  # fmt: skip


async def _events_then_passes(memo: kopf.Memo, events: list[dict], seconds: float = 0.2) -> None:
    """Deliver watch events as kopf does, then let the pass queue run for a while."""
    memo.passes.start()
    for event in events:
        await handlers.on_import_event(event=event, body=kopf.Body(event["object"]), memo=memo)
    await asyncio.sleep(seconds)
    memo.passes.stop()


def test_each_handler_reconciles_through_the_memo_off_the_event_loop():
    passes = Passes()
    memo = _memo(passes)
    asyncio.run(_events_then_passes(memo, [_added("a")]))
    running = {"metadata": {"namespace": "ns", "name": "b", "uid": "u-b"},
               "spec": {"catalog": "main"}, "status": {"jobName": "b-import"}}  # fmt: skip
    passes.queues.observe(running)
    passes.queues.observe(
        {**running, "metadata": {"namespace": "ns", "name": "q", "uid": "u-q"}, "status": {}}
    )  # fmt: skip  (queued: no pass of its own)
    asyncio.run(handlers.poll_running_once(memo))
    owned = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": f"{GROUP}/{VERSION}", "name": "c", "controller": True},
                {"apiVersion": "v1", "name": "not-ours", "controller": True},
                {"apiVersion": f"{GROUP}/{VERSION}", "name": "no-controller"},
            ]
        }
    }

    async def job_event() -> None:
        memo.passes.start()
        await handlers.on_job_event(body=kopf.Body(owned), namespace="ns", memo=memo)
        await asyncio.sleep(0.2)
        memo.passes.stop()

    asyncio.run(job_event())
    # A blocking pass runs in a worker thread, never on kopf's event loop.
    assert passes.passes == [("ns", "a", False), ("ns", "b", False), ("ns", "c", False)]


def test_only_new_imports_and_cancel_requests_ask_for_a_pass_and_a_flood_asks_once_each():
    """The operator's own status writes come back as MODIFIED events: they must not ask
    for passes (each pass would ask for the next). A key asked for many times while it
    waits is passed once."""
    passes = Passes()
    memo = _memo(passes)
    listing = {**_added("listed"), "type": None}  # the initial listing: found at start-up
    ours = {**_added("a"), "type": "MODIFIED"}  # a status write
    cancel = _added("x", annotations={ANNOTATION_CANCEL: "true"})
    cancel["type"] = "MODIFIED"
    ended = _added("done")
    ended["object"]["status"] = {
        "phase": "Succeeded",
        "conditions": [{"type": "Succeeded", "status": "True"}],
    }
    flood = [_added("a")] * 50 + [ours, listing, cancel, ended, {**_added("d"), "type": "DELETED"}]
    asyncio.run(_events_then_passes(memo, flood))
    assert sorted(name for _, name, _ in passes.passes) == ["a", "listed", "x"]


def test_a_store_outage_asks_for_the_pass_again_after_poll_seconds():
    passes = Passes(fail=True)
    memo = handlers.operator_memo(
        passes, OperatorSettings(poll_seconds=0.05, retention_interval_seconds=0)
    )
    asyncio.run(_events_then_passes(memo, [_added("a")], seconds=0.3))
    assert 3 <= len(passes.passes) <= 7, passes.passes  # 0.3 s of 0.05 s retries
    assert {name for _, name, _ in passes.passes} == {"a"}


def test_startup_configures_kopf_and_refuses_to_run_without_a_reconciler():
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings, memo=_memo(Passes()))
    assert settings.posting.enabled is False
    assert settings.queueing.worker_limit == handlers.WORKER_LIMIT
    with pytest.raises(kopf.PermanentError, match="productimport-operator"):
        handlers.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo())


def test_the_module_keeps_no_state_of_its_own():
    assert not hasattr(handlers, "_state") and not hasattr(handlers, "install")


def _import(name: str, created: str, status: dict | None = None) -> dict:
    return {
        "metadata": {
            "name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1,
            "creationTimestamp": created,
        },
        "spec": {"catalog": "main"},
        "status": status or {},
    }  # fmt: skip


def test_the_watch_keeps_each_catalogs_queue_and_the_resync_starts_only_its_head():
    """Waiting costs no API call: the queue is what the watch said; the periodic resync
    passes over the head of each catalog that has not started, nothing else."""
    passes = Passes()
    passes.queues = ImportQueues()
    memo = _memo(passes)
    memo.settings.queue_resync_seconds = 0.01
    for name, created in (("b", "2026-01-01T00:00:02Z"), ("a", "2026-01-01T00:00:01Z")):
        event = {"type": None, "object": _import(name, created)}  # the initial listing
        asyncio.run(handlers.on_import_event(event=event, body=event["object"], memo=memo))
    added = {"type": "ADDED"}
    asyncio.run(
        handlers.on_import_event(event=added, body=_import("c", "2026-01-01T00:00:03Z"), memo=memo)
    )
    assert [w.name for w in passes.queues.waiting("ns", "main")] == ["b", "a", "c"]
    assert [h.name for h in passes.queues.heads()] == ["a"]
    assert len(memo.passes) == 3  # one pass each (their Queued status), not this test's subject
    memo.passes = handlers.PassQueue(memo)

    async def one_resync() -> None:
        await handlers.start_loops(memo=memo)
        await asyncio.sleep(0.05)
        await handlers.stop_loops(memo=memo)

    asyncio.run(one_resync())
    assert {p[1] for p in passes.passes} == {"a"}  # never the imports behind it

    # "a" ended (terminal status) and was deleted: "b" is the head now.
    asyncio.run(
        handlers.on_import_event(event={"type": "DELETED"}, body=_import("a", ""), memo=memo)
    )
    assert [h.name for h in passes.queues.heads()] == ["b"]
