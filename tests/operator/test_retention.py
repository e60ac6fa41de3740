"""Retention in the operator (operator/retention.py): what finished and deleted imports
leave behind goes, each catalog keeps its last versions, and a pass stays cheap.

In memory where the cluster is not the point: the decision tests' world (test_decisions:
a MemoryKube, the real Reconciler, the engine's real LocalObjectStore and real Delta
tables, a real loader where one runs), with the upload bucket as a second local store.
The last test runs on the dev cluster: a real upload through the API, a real import, the
real paginated LIST and MinIO.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
from imports_support import exists, finished, upload
from test_decisions import NS, World

from devenv import services
from productimport.api.uploads import object_key
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import LocalObjectStore, open_store
from productimport.engine.products import list_products
from productimport.engine.s3store import MinioObjectStore, MinioSettings, minio_client
from productimport.operator import handlers
from productimport.operator.kube import Kube
from productimport.operator.retention import API_UPLOAD, Sweeper, kube_lister
from productimport.operator.settings import OperatorSettings
from productimport.operator.store import ImportReports
from tests.engine.catalog_rows import rows

NOW = datetime.now(UTC).replace(microsecond=0)
WEEK = 7 * 86400


class Retention:
    """The world, its upload bucket, and a Sweeper over both that counts its LISTs."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.world = World(root / "store")
        self.uploads = LocalObjectStore(root / "uploads")
        self.lists = 0
        self.settings = OperatorSettings(
            store=str(self.world.root), upload_bucket="uploads", **settings
        )
        self.sweeper = Sweeper(self._list, self.world.store.inner, self.uploads, self.settings)

    def _list(self) -> list[dict[str, Any]]:
        self.lists += 1
        return self.world.kube.list_imports(NS)

    @property
    def kube(self):
        return self.world.kube

    def upload(self, catalog: str = "main", day: datetime = NOW) -> str:
        """An upload where the API stores it (its own key layout)."""
        key = object_key(NS, catalog, day)
        self.uploads.put(key, b"sku,name,price\nA,Alpha,1\n")
        return key

    def apply(self, name: str, catalog: str = "main", key: str | None = None) -> str:
        """A ProductImport of an API upload (a new one unless `key` names one)."""
        key = key or self.upload(catalog)
        self.world.apply(
            name, catalog=catalog, source={"object": {"bucket": "uploads", "key": key}}
        )
        return key

    def finish(self, name: str, ago: timedelta, catalog: str = "main", key: str | None = None):
        """An import that finished `ago`, with its result and error report in the store."""
        key = self.apply(name, catalog, key)
        self.world.write_result(name, completedAt=NOW - ago)
        catalog_, uid = self.world._catalog(name)
        self.world.store.inner.put(catalog_.import_key(uid, "errors.csv"), b"line,code\n")
        self.world.reconcile(name)
        assert self.world.status(name)["phase"] == "Succeeded"
        return key

    def documents(self, name: str) -> list[str]:
        catalog, uid = self.world._catalog(name)
        return list(self.world.store.inner.list(catalog.import_key(uid, "")))

    def delete(self, name: str, event: bool = True) -> dict[str, Any]:
        """kubectl delete (no finalizer: the object goes at once) and, unless the operator
        missed it, the watch's DELETED event through the kopf handler."""
        obj = self.kube.imports.pop((NS, name))
        if event:
            memo = handlers.operator_memo(self.world.reconciler, self.settings)
            memo.retention = self.sweeper
            asyncio.run(
                handlers.on_import_event(event={"type": "DELETED"}, body=kopf.Body(obj), memo=memo)
            )
            self.sweeper.executor.submit(lambda: None).result()  # its thread has done it
        return obj


def test_the_api_upload_layout_is_what_retention_recognises():
    assert API_UPLOAD.match(object_key("shop-a", "main", NOW))
    for users_own in ("shop-a/2026-03-01/spring.csv", "shop-a/tests/x.upload", "shop-a/x.csv"):
        assert not API_UPLOAD.match(users_own)


def test_sources_and_documents_of_imports_finished_longer_ago_than_the_setting_go(tmp_path):
    r = Retention(tmp_path, retention_import_seconds=WEEK)
    old = r.finish("old", ago=timedelta(days=8))
    recent = r.finish("recent", ago=timedelta(hours=1))
    running = r.apply("running", catalog="outlet")
    r.world.reconcile("running")
    r.world.write_progress("running", "merging", 100)
    queued = r.apply("queued", catalog="outlet")
    r.world.reconcile("queued")
    assert r.world.status("running")["phase"] == "Running"
    assert r.world.status("queued")["phase"] == "Queued"
    # An import of an object a user put in the upload bucket themselves.
    users_own = f"{NS}/2026-03-01/spring.csv"
    r.uploads.put(users_own, b"sku\n")
    r.world.apply("users", source={"object": {"bucket": "uploads", "key": users_own}})
    r.world.write_result("users", completedAt=NOW - timedelta(days=30))
    r.world.reconcile("users")
    old_documents = r.documents("old") + r.documents("users")
    assert len(old_documents) == 3  # a result and a report; a result

    swept = r.sweeper.sweep()

    assert sorted(swept.documents) == sorted(old_documents) and swept.sources == [old]
    assert r.documents("old") == [] and not r.uploads.exists(old)
    assert r.uploads.exists(users_own)  # the user's own object is theirs
    for key in (recent, running, queued):
        assert r.uploads.exists(key)
    assert len(r.documents("recent")) == 2 and r.documents("running")  # its progress
    assert r.lists == 1
    # Nothing is left to do: the next pass deletes nothing.
    again = r.sweeper.sweep()
    assert again.documents == [] and again.sources == []


def test_a_deleted_import_loses_its_documents_at_once_and_its_source_in_the_next_pass(
    tmp_path,
):
    r = Retention(tmp_path, retention_import_seconds=WEEK)
    gone = r.finish("gone", ago=timedelta(minutes=5))
    shared = r.finish("shared", ago=timedelta(minutes=4))
    r.finish("rerun", ago=timedelta(minutes=3), key=shared)  # the same upload, again
    assert r.documents("gone")

    documents = r.documents("gone")
    r.delete("gone")
    assert not any(r.world.store.inner.exists(k) for k in documents)  # at once
    r.delete("shared")
    swept = r.sweeper.sweep()
    assert swept.sources == [gone] and not r.uploads.exists(gone)
    assert r.uploads.exists(shared)  # "rerun" still names it
    r.delete("rerun")
    assert r.sweeper.sweep().sources == [shared]


def test_what_a_missed_deletion_left_goes_in_a_pass(tmp_path):
    """The operator was down when the import was deleted: a pass finds its documents with
    no import; its upload goes once it can no longer be on its way to an import."""
    r = Retention(tmp_path, retention_import_seconds=WEEK)
    today = r.finish("today", ago=timedelta(hours=1))
    older = r.finish("older", ago=timedelta(hours=1), key=r.upload(day=NOW - timedelta(days=3)))
    documents = r.documents("today") + r.documents("older")
    unclaimed = r.upload()  # stored by the API, its ProductImport not created yet
    r.delete("today", event=False)
    r.delete("older", event=False)

    swept = r.sweeper.sweep()

    assert sorted(swept.documents) == sorted(documents)
    assert swept.sources == [older]
    assert r.uploads.exists(today) and r.uploads.exists(unclaimed)


def test_an_import_that_starts_while_a_pass_runs_keeps_its_documents(tmp_path):
    """An import the pass's LIST does not show yet, whose loader writes while the pass
    runs, is not taken for a deleted one."""
    r = Retention(tmp_path, retention_import_seconds=WEEK)
    r.finish("old", ago=timedelta(days=8))

    def list_then_an_import_starts() -> list[dict[str, Any]]:
        listed = r.kube.list_imports(NS)
        r.apply("newcomer", catalog="outlet")
        r.world.reconcile("newcomer")
        r.world.write_progress("newcomer", "reading", 0)
        return listed

    r.sweeper.list_imports = list_then_an_import_starts
    swept = r.sweeper.sweep()
    assert len(swept.documents) == 2 and r.documents("newcomer")


def test_a_pass_lists_the_imports_once_and_deletes_a_bounded_number(tmp_path):
    r = Retention(tmp_path, retention_import_seconds=WEEK, retention_deletes_per_pass=10)
    for i in range(6):
        r.finish(f"old-{i}", ago=timedelta(days=8))  # a result, a report and a source each
    deleted = []
    for expected, left in ((10, True), (8, False)):
        swept = r.sweeper.sweep()
        assert len(swept.documents) + len(swept.sources) == expected and swept.left is left
        deleted += swept.documents + swept.sources
    assert len(set(deleted)) == 18 and r.lists == 2


def _loader(r: Retention, catalog: Catalog, uid: str, csv: str, failpoint: str) -> None:
    """The import's real loader (the CLI, as the Job runs it), killed by SIGKILL at
    `failpoint`, as its Pod is when the Job goes with its deleted import."""
    source = r.world.root.parent / f"{uid}.csv"
    source.write_text(csv)
    done = subprocess.run(
        [sys.executable, "-m", "productimport.cli", "import", str(source), "--catalog",
         catalog.name, "--namespace", NS, "--store", str(r.world.root), "--import-id", uid],
        env={**os.environ, "PRODUCTIMPORT_FAILPOINT": failpoint},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr


@pytest.mark.parametrize("failpoint", ["before-pointer-move", "after-pointer-move"])
def test_an_import_deleted_while_its_loader_runs_leaves_the_catalog_whole(tmp_path, failpoint):
    """Deleted mid-commit: the catalog is exactly the version before, or the loader's
    commit landed whole (a version like any other, its import id in the history); the
    next import commits on top; what the loader wrote after the deletion goes in a pass."""
    r = Retention(tmp_path, retention_import_seconds=WEEK, retention_keep_versions=10)
    r.apply("first")
    r.world.reconcile("first")
    r.world.commit("first", rows(("A", "Alpha", "1"), ("B", "Beta", "2")))
    r.kube.complete(NS, r.world.job("first"))
    r.world.reconcile("first")
    source = r.apply("second")
    r.world.reconcile("second")
    assert r.world.status("second")["phase"] == "Running"
    catalog, uid = r.world._catalog("second")
    job = r.world.job("second")

    r.delete("second")
    r.kube.delete_job(NS, job)  # the garbage collector's work: the import owned it
    # ...but its loader is still at work, and is killed at the worst moment of its commit.
    _loader(r, catalog, uid, rows(("A", "Changed", "1"), ("C", "Gamma", "3")), failpoint)

    history = catalog.history()
    products = {sku for sku, _ in _skus(catalog)}
    if failpoint == "before-pointer-move":
        assert [v.version for v in history] == [1] and products == {"A", "B"}
    else:
        assert (history[0].version, history[0].importId) == (2, uid)
        assert products == {"A", "B", "C"}
    # The catalog's queue does not wait for the deleted import: the next one runs.
    r.apply("third")
    r.world.reconcile("third")
    assert r.world.status("third")["phase"] == "Running"
    r.world.commit("third", rows(("D", "Delta", "4")))
    assert {sku for sku, _ in _skus(catalog)} == products | {"D"}

    left = list(r.world.store.inner.list(catalog.import_key(uid, "")))
    assert left, "the loader wrote its progress after the deletion"
    swept = r.sweeper.sweep()
    assert set(left) <= set(swept.documents)
    assert not list(r.world.store.inner.list(catalog.import_key(uid, "")))
    assert source in swept.sources and not r.uploads.exists(source)
    assert r.documents("third")  # running: kept
    assert {sku for sku, _ in _skus(catalog)} == products | {"D"}


def _skus(catalog: Catalog) -> list[tuple[str, str]]:
    items, _ = list_products(catalog, limit=1000)
    return [(p["sku"], p["name"]) for p in items]


def test_a_pass_keeps_each_catalogs_last_versions_and_leaves_a_busy_catalog_alone(tmp_path):
    r = Retention(tmp_path, retention_keep_versions=2)

    def run(name: str, catalog: str, sku: str, end: bool = True) -> None:
        r.apply(name, catalog)
        r.world.reconcile(name)
        r.world.commit(name, rows((sku, f"Name {name}", "1")))
        if end:
            r.kube.complete(NS, r.world.job(name))
            r.world.reconcile(name)

    for i in range(4):
        run(f"main-{i}", "main", f"M{i}")
    for i in range(3):
        run(f"outlet-{i}", "outlet", f"O{i}")
    run("outlet-busy", "outlet", "O9", end=False)  # committed, its Job not ended yet
    main = Catalog(r.world.store.inner, NS, "main")
    outlet = Catalog(r.world.store.inner, NS, "outlet")

    swept = r.sweeper.sweep()

    assert swept.catalogs == [(NS, "main")] and swept.files == 2
    assert [v.version for v in main.history()] == [4, 3]
    assert [v.version for v in outlet.history()] == [4, 3, 2, 1]
    assert r.sweeper.sweep().catalogs == []  # nothing new since
    r.kube.complete(NS, r.world.job("outlet-busy"))
    r.world.reconcile("outlet-busy")
    assert r.sweeper.sweep().catalogs == [(NS, "outlet")]
    assert [v.version for v in outlet.history()] == [4, 3]
    assert {sku for sku, _ in _skus(outlet)} == {"O0", "O1", "O2", "O9"}


def test_retention_passes_run_in_the_sweepers_own_thread(tmp_path):
    """Never on kopf's event loop, never in the threads the reconciler's passes use."""
    r = Retention(tmp_path, retention_interval_seconds=0.01)
    threads: list[str] = []
    sweep = r.sweeper.sweep

    def recorded():
        threads.append(threading.current_thread().name)
        return sweep()

    r.sweeper.sweep = recorded
    memo = handlers.operator_memo(r.world.reconciler, r.settings)
    memo.retention = r.sweeper

    async def a_while() -> None:
        await handlers.start_loops(memo=memo)
        await asyncio.sleep(0.2)
        await handlers.stop_loops(memo=memo)

    asyncio.run(a_while())
    assert threads and all(name.startswith("retention") for name in threads), threads


@pytest.mark.cluster
def test_on_the_cluster_a_pass_deletes_an_expired_and_a_deleted_imports_objects(
    cluster, minio, kube
):
    """Files uploaded through the API and imported by the dev cluster's loaders; the real
    LIST (paginated) and MinIO: an expired import's objects go, then a deleted one's,
    nothing of a recent one, and nothing outside the sweeper's namespaces."""
    ns = cluster.namespace("ret")
    env = cluster.env
    done: list[dict[str, Any]] = []
    for i in range(3):  # one after the other: distinct completion times
        answer = httpx.post(
            f"{env['PRODUCTIMPORT_API_URL']}/api/v1/namespaces/{ns}/catalogs/main/imports",
            headers={"Authorization": f"Bearer {env['PRODUCTIMPORT_API_TOKEN']}"},
            files={"file": ("p.csv", rows(("A", f"Alpha {i}", "1")).encode(), "text/csv")},
            timeout=60,
        )
        assert answer.status_code == 202, answer.text
        done.append(finished(cluster, answer.json()["name"], ns))
        time.sleep(1.1)
    assert [o["status"]["phase"] for o in done] == ["Succeeded"] * 3
    expired, deleted, recent = done
    sources = [o["spec"]["source"]["object"]["key"] for o in done]
    assert all(API_UPLOAD.match(key) for key in sources)
    reports = open_store("s3://catalog")

    def documents(obj: dict[str, Any]) -> list[str]:
        prefix = Catalog(reports, ns, "main").import_key(obj["metadata"]["uid"], "")
        return list(reports.list(prefix))

    assert all(documents(o) for o in done)
    # A week after the first one ended: it alone has expired.
    ended = datetime.fromisoformat(expired["status"]["completionTime"])
    settings = OperatorSettings(
        namespaces=ns, upload_bucket="uploads", retention_import_seconds=WEEK,
        retention_keep_versions=0,
    )  # fmt: skip
    sweeper = Sweeper(
        kube_lister(Kube(kube.api_client), [ns]), reports, open_store("s3://uploads"),
        settings, now=lambda: ended + timedelta(seconds=WEEK),
    )  # fmt: skip
    swept = sweeper.sweep()
    assert swept.sources == [sources[0]] and not exists(minio, "uploads", sources[0])
    assert not documents(expired) and documents(deleted) and documents(recent)

    cluster.kubectl("delete", "productimport", deleted["metadata"]["name"], "-n", ns)
    sweeper.submit_forget(deleted).result()  # what the watch's DELETED event hands over
    assert not documents(deleted)
    swept = sweeper.sweep()
    assert swept.sources == [sources[1]] and not exists(minio, "uploads", sources[1])
    assert exists(minio, "uploads", sources[2]) and documents(recent)


@pytest.mark.cluster
def test_the_operators_own_minio_user_reads_upload_sizes_and_lists_the_uploads(cluster, minio):
    """With the operator's least-privilege user (not root): the size that decides a
    partitioned import, and the listing a retention pass starts from. Neither may need
    the bucket's location, which that user is not allowed to ask."""
    ns = cluster.namespace("opuser")
    body = rows(("A", "Alpha", "1")).encode()
    source = upload(minio, ns, body)
    operator_user = MinioSettings(
        endpoint=cluster.env["MINIO_ENDPOINT"], **{
            k.removeprefix("MINIO_").lower(): v
            for k, v in services.operator_store_credentials(cluster.devenv).items()
        },
    )  # fmt: skip
    uploads = MinioObjectStore(minio_client(operator_user), "uploads", "", operator_user)
    reports = ImportReports(uploads)
    assert reports.source_size("uploads", source["key"]) == len(body)
    assert reports.source_size("uploads", f"{ns}/missing.csv") is None
    assert source["key"] in set(uploads.list(f"{ns}/"))
