"""Read a catalog's current products for the API, through the engine's Catalog.

A version's data files are immutable, so the files of the current version (its
"snapshot": one directory of Parquet files, one or more per bucket) are downloaded once
per version and queried with DuckDB (paging and key lookups without loading the catalog
into Python).

The local copies live in a bounded cache (`snapshot_cache_bytes`, on the API's small
emptyDir): least recently used snapshots are evicted to make room, a snapshot in use by
a query is never evicted, and a snapshot larger than the whole cache is refused with 507
rather than filling the disk. (Querying it in place from MinIO would need DuckDB's
httpfs extension and external access, both of which the sandbox turns off on purpose.)
Downloads are serialised per catalog, not globally: one tenant's large download does
not hold up another tenant's reads. The wait for a catalog's download happens on the
event loop (an anyio lock), so requests queued behind it hold no worker thread either.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from minio import Minio

from productimport.api.errors import ApiError
from productimport.api.settings import ApiSettings
from productimport.engine.catalog import Catalog, Head
from productimport.engine.objectstore import MinioObjectStore
from productimport.models.product import HIDDEN_COLUMNS, Product, attributes_dict

log = logging.getLogger(__name__)

CACHE_DIR_PREFIX = "productimport-api-snapshots-"
DOWNLOAD_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    version: int
    path: Path | None  # a directory of Parquet files; None: the empty catalog


@dataclass
class _Entry:
    path: Path
    size: int
    users: int = 0  # queries (or the download) using the file now: not evictable
    stale: bool = False  # a newer version of its catalog is cached: drop when unused


class SnapshotCache:
    """Local snapshot files, at most `capacity` bytes together (downloads in progress
    included), evicted least recently used first."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        # Bookkeeping of the entries, taken from the event loop and worker threads alike;
        # held for dictionary updates only, never during I/O.
        self._meta = threading.Lock()
        self._entries: OrderedDict[Path, _Entry] = OrderedDict()
        self._used = 0
        # One lock per catalog, alive while someone holds or waits for it.
        self._catalog_locks: weakref.WeakValueDictionary[str, anyio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @property
    def used(self) -> int:
        return self._used

    def _catalog_lock(self, namespace: str, catalog: str) -> anyio.Lock:
        key = f"{namespace}/{catalog}"
        lock = self._catalog_locks.get(key)
        if lock is None:
            lock = self._catalog_locks[key] = anyio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def pinned(
        self,
        namespace: str,
        catalog: str,
        name: str,
        size: Callable[[], int],
        download: Callable[[Path, int], None],
    ) -> AsyncIterator[Path]:
        """The local copy of snapshot `name`, downloaded first if needed (in a worker
        thread), kept from eviction until the block ends."""
        path = self.directory / namespace / catalog / name
        async with self._catalog_lock(namespace, catalog):
            if not self._pin(path):
                await anyio.to_thread.run_sync(self._fetch, path, size, download)
        try:
            yield path
        finally:
            self._unpin(path)

    def _pin(self, path: Path) -> bool:
        with self._meta:
            entry = self._entries.get(path)
            if entry is None:
                return False
            entry.users += 1
            self._entries.move_to_end(path)
            return True

    def _unpin(self, path: Path) -> None:
        with self._meta:
            entry = self._entries.get(path)
            if entry is None:
                return
            entry.users -= 1
            if entry.stale and entry.users == 0:
                self._drop(path)

    def _fetch(
        self, path: Path, stat: Callable[[], int], download: Callable[[Path, int], None]
    ) -> None:
        size = stat()
        if size > self.capacity:
            raise ApiError(
                507,
                f"this catalog's snapshot is {size} bytes, larger than the API's snapshot "
                f"cache of {self.capacity} bytes, so its products cannot be read through "
                "the API; raise PRODUCTIMPORT_API_SNAPSHOT_CACHE_BYTES (and the volume "
                "under it) or read the snapshot from the store",
                code="snapshot_too_large",
            )
        self._reserve(path, size)  # pinned by us from here on
        partial = path.with_suffix(".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            download(partial, size)
            partial.rename(path)
        except BaseException:
            _remove(partial)
            with self._meta:
                self._drop(path)
            raise
        self._retire_older(path)

    def _reserve(self, path: Path, size: int) -> None:
        with self._meta:
            for old, entry in list(self._entries.items()):
                if self._used + size <= self.capacity:
                    break
                if entry.users == 0:
                    self._drop(old)
            if self._used + size > self.capacity:
                # Everything left is being read right now; a moment later it is not.
                raise ApiError(
                    503,
                    "the snapshot cache is full of catalogs being read; retry shortly",
                    code="snapshot_cache_busy",
                    headers={"Retry-After": "1"},
                )
            self._entries[path] = _Entry(path, size, users=1)
            self._used += size

    def _retire_older(self, path: Path) -> None:
        """Other versions of the same catalog are never asked for again."""
        with self._meta:
            for other, entry in list(self._entries.items()):
                if other != path and other.parent == path.parent:
                    entry.stale = True
                    if entry.users == 0:
                        self._drop(other)

    def _drop(self, path: Path) -> None:
        """Forget and delete a file (caller holds `_meta`)."""
        entry = self._entries.pop(path, None)
        if entry is not None:
            self._used -= entry.size
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RemoteSnapshot:
    """A catalog version's files in the store: the cache entry's name, its size, and how
    to download it into a directory."""

    name: str
    size: int
    download: Callable[[Path, int], None]


def remote_snapshot(client: Minio, catalog: Catalog, head: Head) -> RemoteSnapshot:
    table = catalog.table
    assert isinstance(table, MinioObjectStore)
    files = sorted(head.files, key=lambda f: f.path)

    def download(target: Path, expected: int) -> None:
        target.mkdir(parents=True)
        for index, data_file in enumerate(files):
            key = f"{table.prefix}/{data_file.path}"
            local = target / f"{index:05d}.parquet"
            download_object(client, table.bucket, key, local, data_file.size)

    # Named by the version and its files: a catalog deleted and made again reuses
    # version numbers, never file names.
    listing = "\n".join(f.path for f in files).encode()
    name = f"v{head.version}-{hashlib.sha256(listing).hexdigest()[:16]}"
    return RemoteSnapshot(name, sum(f.size for f in files), download)


def cache_directory(configured: str | None) -> Path:
    """A fresh directory of this process's own under `configured` (else the system temp
    directory), after removing the ones processes that are gone left behind: the chart's
    /tmp emptyDir outlives a container restart, and two caches would not fit in it."""
    base = Path(configured or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    for leftover in base.glob(f"{CACHE_DIR_PREFIX}*"):
        if leftover.is_dir() and _abandoned(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{CACHE_DIR_PREFIX}{os.getpid()}-", dir=base))
    _OWN_DIRS.add(path)
    return path


_OWN_DIRS: set[Path] = set()  # this process's caches (tests run several apps in one)


def _abandoned(path: Path) -> bool:
    """Whether the process that made this cache directory is gone. A restarted
    container's process often has the same PID (1) as the one before it, so for our own
    PID only the directories this process made count as in use."""
    pid_text = path.name.removeprefix(CACHE_DIR_PREFIX).split("-", 1)[0]
    if not pid_text.isdigit():
        return False  # not named by this scheme: whose it is cannot be told, so keep it
    pid = int(pid_text)
    if pid == os.getpid():
        return path not in _OWN_DIRS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class CatalogReader:
    def __init__(self, client: Minio, settings: ApiSettings, cache_dir: Path | None = None) -> None:
        self._client = client
        self._store = MinioObjectStore(
            client, settings.catalog_bucket, settings.catalog_prefix, settings.minio
        )
        self.cache = SnapshotCache(
            cache_dir or cache_directory(settings.snapshot_cache_dir),
            settings.snapshot_cache_bytes,
        )

    def catalog(self, namespace: str, catalog: str) -> Catalog:
        """A catalog as the API sees it (its own MinIO keys)."""
        return Catalog(self._store, namespace, catalog)

    @contextlib.asynccontextmanager
    async def open(self, namespace: str, catalog: str) -> AsyncIterator[Snapshot | None]:
        """The catalog's current version, its files local and pinned for the block.
        None when the catalog has never been written."""
        cat = self.catalog(namespace, catalog)
        head = await anyio.to_thread.run_sync(cat.head)
        if head.table is None:
            yield None
            return
        if not head.files:
            yield Snapshot(head.version, None)
            return
        remote = remote_snapshot(self._client, cat, head)
        pinned = self.cache.pinned(
            namespace, catalog, remote.name, lambda: remote.size, remote.download
        )
        async with pinned as path:
            yield Snapshot(head.version, path)

    async def page(
        self, namespace: str, catalog: str, limit: int, offset: int
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """(catalog version, total products, the page); version 0 for no catalog."""
        async with self.open(namespace, catalog) as snap:
            if snap is None:
                return 0, 0, []
            total, items = await anyio.to_thread.run_sync(_page, snap, limit, offset)
            return snap.version, total, items

    async def get(self, namespace: str, catalog: str, sku: str) -> dict[str, Any] | None:
        async with self.open(namespace, catalog) as snap:
            if snap is None:
                return None
            return await anyio.to_thread.run_sync(_get, snap, sku)


def download_object(client: Minio, bucket: str, key: str, target: Path, expected: int) -> None:
    """Stream the object to `target`, never writing more than the reserved size."""
    response = client.get_object(bucket, key)
    written = 0
    try:
        with open(target, "wb") as handle:
            for chunk in response.stream(DOWNLOAD_CHUNK):
                written += len(chunk)
                if written > expected:
                    raise RuntimeError(f"s3://{bucket}/{key} grew while it was downloaded")
                handle.write(chunk)
    finally:
        response.close()
        response.release_conn()


def _page(snap: Snapshot, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    if snap.path is None:
        return 0, []
    from productimport.engine import sandbox  # lazily: the upload path never needs DuckDB

    with sandbox.connect(directories=[snap.path]) as con:
        source = _source(snap.path)
        (total,) = con.execute(f"SELECT count(*) FROM {source}").fetchone()  # type: ignore[misc]
        cursor = con.execute(
            f"SELECT * FROM {source} ORDER BY sku LIMIT ? OFFSET ?", [limit, offset]
        )
        return int(total), _rows(cursor)


def _get(snap: Snapshot, sku: str) -> dict[str, Any] | None:
    if snap.path is None:
        return None
    from productimport.engine import sandbox

    with sandbox.connect(directories=[snap.path]) as con:
        cursor = con.execute(f"SELECT * FROM {_source(snap.path)} WHERE sku = ?", [sku])
        rows = _rows(cursor)
    return rows[0] if rows else None


def _source(directory: Path) -> str:
    pattern = str(directory / "*.parquet").replace("'", "''")
    return f"read_parquet('{pattern}', hive_partitioning = false)"


def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    known = set(Product.model_fields)
    out = []
    for row in cursor.fetchall():
        record = {n: v for n, v in zip(names, row, strict=True) if n not in HIDDEN_COLUMNS}
        record["attributes"] = attributes_dict(record.get("attributes"))
        if record.get("tags") is None:
            record["tags"] = []
        product = Product.model_validate({k: v for k, v in record.items() if k in known})
        out.append(product.model_dump(mode="json"))
    return out
