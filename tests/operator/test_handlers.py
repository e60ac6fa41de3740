"""The kopf handlers reach the reconciler through kopf's memo (no cluster, no kopf.run:
the handlers are called as kopf calls them, with the memo main.py passes to kopf.run)."""

from __future__ import annotations

import asyncio
import threading

import kopf
import pytest

from productimport.engine.errors import TemporaryFailure
from productimport.models.resource import GROUP, VERSION
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


def test_each_handler_reconciles_through_the_memo_off_the_event_loop():
    passes = Passes()
    memo = _memo(passes)
    asyncio.run(handlers.on_change(namespace="ns", name="a", memo=memo))
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
    asyncio.run(handlers.on_job_event(body=kopf.Body(owned), namespace="ns", memo=memo))
    # A blocking pass runs in a worker thread, never on kopf's event loop.
    assert passes.passes == [("ns", "a", False), ("ns", "b", False), ("ns", "c", False)]


def test_a_store_outage_is_a_kopf_temporary_error_retried_after_poll_seconds():
    memo = _memo(Passes(fail=True))
    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(handlers.on_change(namespace="ns", name="a", memo=memo))
    assert raised.value.delay == 7 and "MinIO" in str(raised.value)


def test_startup_configures_kopf_and_refuses_to_run_without_a_reconciler():
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings, memo=_memo(Passes()))
    assert settings.persistence.finalizer == f"{GROUP}/finalizer"
    assert settings.posting.enabled is False
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
        handlers.on_import_event(event=event, body=event["object"], memo=memo)
    handlers.on_import_event(
        event={"type": "ADDED"}, body=_import("c", "2026-01-01T00:00:03Z"), memo=memo
    )
    assert [w.name for w in passes.queues.waiting("ns", "main")] == ["b", "a", "c"]
    assert [h.name for h in passes.queues.heads()] == ["a"]

    async def one_resync() -> None:
        await handlers.start_loops(memo=memo)
        await asyncio.sleep(0.05)
        await handlers.stop_loops(memo=memo)

    asyncio.run(one_resync())
    assert {p[1] for p in passes.passes} == {"a"}  # never the imports behind it

    # "a" ended (terminal status) and was deleted: "b" is the head now.
    handlers.on_import_event(event={"type": "DELETED"}, body=_import("a", ""), memo=memo)
    assert [h.name for h in passes.queues.heads()] == ["b"]
