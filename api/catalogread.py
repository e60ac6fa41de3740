"""Read a catalog's current products for the API, through the engine's Catalog.

Snapshots are immutable, so the Parquet file of the current version is downloaded once
per version and queried with DuckDB (paging and key lookups without loading the catalog
into Python).
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minio import Minio

from productimport.api.settings import ApiSettings
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import MinioObjectStore
from productimport.models.product import HIDDEN_COLUMNS, Product, attributes_dict


@dataclass(frozen=True)
class Snapshot:
    version: int
    path: Path | None  # None: the empty catalog


class CatalogReader:
    def __init__(self, client: Minio, settings: ApiSettings, cache_dir: Path | None = None) -> None:
        self._store = MinioObjectStore(client, settings.catalog_bucket, settings.catalog_prefix)
        self._dir = cache_dir or Path(tempfile.mkdtemp(prefix="productimport-api-snapshots-"))
        self._lock = threading.Lock()

    def current(self, namespace: str, catalog: str) -> Snapshot | None:
        """None when the catalog has never been written."""
        cat = Catalog(self._store, namespace, catalog)
        manifest, _ = cat.head()
        if manifest is None:
            return None
        if manifest.snapshot is None:
            return Snapshot(manifest.version, None)
        local = self._dir / namespace / catalog / Path(manifest.snapshot).name
        with self._lock:
            if not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_suffix(".part")
                cat.download_snapshot(manifest, partial)
                partial.rename(local)
                # Older versions of this catalog are never asked for again.
                for old in local.parent.glob("*.parquet"):
                    if old != local:
                        old.unlink(missing_ok=True)
        return Snapshot(manifest.version, local)

    def page(self, snap: Snapshot, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        if snap.path is None:
            return 0, []
        from productimport.engine import sandbox  # lazily: the upload path never needs DuckDB

        with sandbox.connect(files=[snap.path]) as con:
            source = f"read_parquet('{_quote(snap.path)}')"
            (total,) = con.execute(f"SELECT count(*) FROM {source}").fetchone()  # type: ignore[misc]
            cursor = con.execute(
                f"SELECT * FROM {source} ORDER BY sku LIMIT ? OFFSET ?", [limit, offset]
            )
            return int(total), _rows(cursor)

    def get(self, snap: Snapshot, sku: str) -> dict[str, Any] | None:
        if snap.path is None:
            return None
        from productimport.engine import sandbox

        with sandbox.connect(files=[snap.path]) as con:
            cursor = con.execute(
                f"SELECT * FROM read_parquet('{_quote(snap.path)}') WHERE sku = ?", [sku]
            )
            rows = _rows(cursor)
        return rows[0] if rows else None


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


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
