"""Product reads keep catalog snapshots in a bounded local cache: least recently used
evicted, a snapshot larger than the cache refused (507) instead of filling the disk,
downloads serialised per catalog rather than globally. Catalogs are written to the real
MinIO by the real engine; reads go through the real HTTP API."""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from productimport.api.catalogread import (
    CACHE_DIR_PREFIX,
    RemoteSnapshot,
    SnapshotCache,
    cache_directory,
    remote_snapshot,
)
from productimport.api.errors import ApiError
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import MinioObjectStore
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import

BUCKET = "catalog"
ROWS = 2000


@dataclass(frozen=True)
class Written:
    namespace: str
    catalog: str
    remote: RemoteSnapshot  # the version's files, as the API caches them

    @property
    def size(self) -> int:
        return self.remote.size


def write_catalog(minio, workdir: Path, namespace: str, name: str, tag: str = "v1") -> Written:
    """Import ROWS products into `namespace/name` with the engine."""
    source = workdir / f"{name}-{tag}.csv"
    lines = [f"{name[:1]}{i:06d},Product {i} {tag} of {name},{i % 97}.50" for i in range(ROWS)]
    source.write_text("sku,name,price\n" + "\n".join(lines) + "\n")
    store = MinioObjectStore(minio, BUCKET)
    options = ImportOptions(source=str(source), catalog=name, namespace=namespace)
    result, code = run_import(options, store=store)
    assert code == 0, result
    catalog = Catalog(store, namespace, name)
    head = catalog.head()
    assert head.files
    return Written(namespace, name, remote_snapshot(minio, catalog, head))


def cached(cache_dir: Path) -> dict[str, str]:
    """catalog -> the version cached for it (no partial downloads left)."""
    assert list(cache_dir.rglob("*.part")) == []
    return {p.parent.parent.name: p.parent.name for p in cache_dir.rglob("*.parquet")}


def cached_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())


def contents(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()))


def products_url(api, namespace: str, catalog: str) -> str:
    return f"{api.url}/api/v1/namespaces/{namespace}/catalogs/{catalog}/products"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "sources"
    path.mkdir()
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_least_recently_used_snapshots_are_evicted_to_stay_under_the_cap(
    make_api, fresh_tenant, admin, minio, workdir, cache_dir
):
    keys = {c: write_catalog(minio, workdir, fresh_tenant, c) for c in ("ant", "bee", "cat")}
    sizes = {c: k.size for c, k in keys.items()}
    smallest = min(sizes.values())
    # Room for any two snapshots, never for three.
    cap = sizes["ant"] + sizes["bee"] + smallest // 2
    assert max(sizes.values()) - smallest < smallest // 2
    api = make_api(snapshot_cache_bytes=cap, snapshot_cache_dir=str(cache_dir))
    names = {c: k.remote.name for c, k in keys.items()}

    def read(catalog: str) -> None:
        r = httpx.get(products_url(api, fresh_tenant, catalog), headers=admin)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == ROWS
        assert page["items"][0]["sku"] == f"{catalog[:1]}000000"
        assert cached_bytes(cache_dir) <= cap

    read("ant")
    read("bee")
    assert cached(cache_dir) == {"ant": names["ant"], "bee": names["bee"]}
    read("ant")  # now bee is the least recently used
    read("cat")
    assert cached(cache_dir) == {"ant": names["ant"], "cat": names["cat"]}
    read("bee")  # evicts ant, read before cat
    assert cached(cache_dir) == {"cat": names["cat"], "bee": names["bee"]}
    one = httpx.get(f"{products_url(api, fresh_tenant, 'cat')}/c000042", headers=admin)
    assert one.status_code == 200 and one.json()["name"] == "Product 42 v1 of cat"


def test_a_new_version_replaces_the_old_one_in_the_cache(
    make_api, fresh_tenant, admin, minio, workdir, cache_dir
):
    api = make_api(snapshot_cache_dir=str(cache_dir))
    first = write_catalog(minio, workdir, fresh_tenant, "dog", "v1")
    assert httpx.get(products_url(api, fresh_tenant, "dog"), headers=admin).status_code == 200
    assert cached(cache_dir) == {"dog": first.remote.name}
    second = write_catalog(minio, workdir, fresh_tenant, "dog", "v2")
    r = httpx.get(f"{products_url(api, fresh_tenant, 'dog')}/d000007", headers=admin)
    assert r.json()["name"] == "Product 7 v2 of dog"
    assert cached(cache_dir) == {"dog": second.remote.name}


def test_a_snapshot_larger_than_the_cache_is_507_and_nothing_is_written(
    make_api, fresh_tenant, admin, minio, workdir, cache_dir
):
    written = write_catalog(minio, workdir, fresh_tenant, "elk")
    api = make_api(snapshot_cache_bytes=written.size - 1, snapshot_cache_dir=str(cache_dir))
    for url in (
        products_url(api, fresh_tenant, "elk"),
        f"{products_url(api, fresh_tenant, 'elk')}/e1",
    ):
        r = httpx.get(url, headers=admin)
        assert r.status_code == 507, r.text
        error = r.json()["error"]
        assert error["code"] == "snapshot_too_large"
        assert "larger than the API's snapshot cache" in error["message"]
    assert [p for p in cache_dir.rglob("*") if p.is_file()] == []


def test_page_size_is_bounded(api, tenant, admin):
    r = httpx.get(products_url(api, tenant, "main"), params={"limit": 1001}, headers=admin)
    assert r.status_code == 422
    assert "limit" in r.json()["error"]["message"]


def pin(cache: SnapshotCache, written: Written, download=None):
    """Pin a catalog version in `cache`, downloading it from MinIO (or with `download`)."""
    remote = written.remote
    return cache.pinned(
        written.namespace,
        written.catalog,
        remote.name,
        lambda: remote.size,
        download or remote.download,
    )


def test_one_catalogs_download_does_not_hold_up_another(fresh_tenant, minio, workdir, tmp_path):
    """While one catalog's snapshot is downloading (held open here), another catalog's
    read completes; a second reader of the first catalog waits for that one download
    instead of starting its own."""
    big = write_catalog(minio, workdir, fresh_tenant, "big")
    small = write_catalog(minio, workdir, fresh_tenant, "small")
    cache = SnapshotCache(tmp_path / "cache", capacity=10 * 1024 * 1024)
    started, release = threading.Event(), threading.Event()
    big_downloads: list[Path] = []

    def held_download(target: Path, expected: int) -> None:
        big_downloads.append(target)
        started.set()
        release.wait()
        big.remote.download(target, expected)

    results: dict[str, bytes] = {}

    async def read_big(slot: str) -> None:
        async with pin(cache, big, held_download) as path:
            results[slot] = contents(path)

    async def scenario() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_big, "big-1")
            tasks.start_soon(read_big, "big-2")
            try:
                await anyio.to_thread.run_sync(started.wait)
                # A hang guard, not a timing assertion: with one global lock this
                # read would wait for the held download forever.
                with anyio.fail_after(120):
                    async with pin(cache, small) as path:
                        results["small"] = contents(path)
                assert "big-1" not in results and "big-2" not in results
            finally:
                release.set()

    anyio.run(scenario)
    assert len(results["small"]) == small.size
    assert results["big-1"] == results["big-2"] and len(results["big-1"]) == big.size
    assert len(big_downloads) == 1


def test_a_snapshot_being_read_is_never_evicted(fresh_tenant, minio, workdir, tmp_path):
    first = write_catalog(minio, workdir, fresh_tenant, "fox")
    second = write_catalog(minio, workdir, fresh_tenant, "gnu")
    room_for_one = max(first.size, second.size)
    cache = SnapshotCache(tmp_path / "cache", capacity=room_for_one)

    async def scenario() -> None:
        async with pin(cache, first) as in_use:
            with pytest.raises(ApiError) as refused:
                async with pin(cache, second):
                    pass
            assert refused.value.status == 503
            assert refused.value.headers["Retry-After"] == "1"
            assert in_use.exists()
        async with pin(cache, second) as now:
            assert now.exists()
            assert not in_use.exists()  # no longer read: evicted to make room
        assert cache.used <= cache.capacity

    anyio.run(scenario)


def test_caches_left_by_processes_that_are_gone_are_removed_at_start(tmp_path):
    """The /tmp emptyDir outlives a container restart: the new process must not keep
    its predecessor's snapshots next to its own cache, nor touch a live process's."""
    exited = subprocess.Popen(["true"])  # a PID that has just exited
    exited.wait()
    dead = tmp_path / f"{CACHE_DIR_PREFIX}{exited.pid}-abcd"
    restarted = tmp_path / f"{CACHE_DIR_PREFIX}{os.getpid()}-efgh"  # same PID, not ours
    alive = tmp_path / f"{CACHE_DIR_PREFIX}{os.getppid()}-ijkl"
    unknown = tmp_path / f"{CACHE_DIR_PREFIX}x7k2p9q1"
    for d in (dead, restarted, alive, unknown):
        (d / "ns" / "cat").mkdir(parents=True)
        (d / "ns" / "cat" / "00000001-x.parquet").write_bytes(b"PAR1")
    first = cache_directory(str(tmp_path))
    second = cache_directory(str(tmp_path))  # another app in this process keeps the first
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {first.name, second.name, alive.name, unknown.name}
