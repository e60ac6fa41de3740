"""Reading products out of a catalog version (the CLI's `products list`, the REST API)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from productimport.engine import sandbox
from productimport.engine.catalog import Catalog, Manifest
from productimport.engine.parse import sql_string
from productimport.models.product import HIDDEN_COLUMNS, attributes_dict

# Snapshots are immutable, so a local copy keyed by the snapshot's full reference can be
# reused for as long as it exists.
CACHE_DIR = Path(tempfile.gettempdir()) / "productimport-snapshots"


def _local_snapshot(catalog: Catalog, manifest: Manifest) -> Path | None:
    if manifest.snapshot is None:
        return None
    ref = catalog.ref(manifest.snapshot)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / (hashlib.sha256(ref.encode()).hexdigest() + ".parquet")
    if not path.exists():
        partial = path.with_suffix(".partial")
        catalog.store.download(catalog.key(manifest.snapshot), partial)
        partial.replace(path)
    return path


def _manifest(catalog: Catalog, version: int | None) -> Manifest | None:
    if version is None:
        return catalog.head()[0]
    return catalog.version(version)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    products = []
    for row in cursor.fetchall():
        product = {
            name: value
            for name, value in zip(names, row, strict=True)
            if name not in HIDDEN_COLUMNS
        }
        product["price"] = float(product["price"]) if product["price"] is not None else None
        product["attributes"] = attributes_dict(product["attributes"])
        product["tags"] = list(product["tags"] or [])
        products.append(product)
    return products


def list_products(
    catalog: Catalog, *, offset: int = 0, limit: int = 100, version: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of products ordered by SKU, and the total count."""
    manifest = _manifest(catalog, version)
    path = _local_snapshot(catalog, manifest) if manifest else None
    if path is None:
        return [], 0
    with sandbox.connect(files=[path]) as con:
        source = f"read_parquet({sql_string(str(path))})"
        total = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]  # type: ignore[index]
        products = _rows(
            con, f"SELECT * FROM {source} ORDER BY sku LIMIT ? OFFSET ?", [limit, offset]
        )
    return products, total


def get_product(catalog: Catalog, sku: str, version: int | None = None) -> dict[str, Any] | None:
    manifest = _manifest(catalog, version)
    path = _local_snapshot(catalog, manifest) if manifest else None
    if path is None:
        return None
    with sandbox.connect(files=[path]) as con:
        found = _rows(
            con, f"SELECT * FROM read_parquet({sql_string(str(path))}) WHERE sku = ?", [sku]
        )
    return found[0] if found else None
