"""Reading products out of a catalog version (the CLI's `products list`, the REST API)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from productimport.engine import sandbox
from productimport.engine.catalog import Catalog, Head
from productimport.engine.parse import sql_string
from productimport.models.product import HIDDEN_COLUMNS, attributes_dict

# A table's data files are never rewritten (a change is a new file), so a local copy
# keyed by the file's full reference can be reused for as long as it exists.
CACHE_DIR = Path(tempfile.gettempdir()) / "productimport-snapshots"


def _local_files(catalog: Catalog, head: Head) -> list[Path]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for data_file in head.files:
        ref = f"{catalog.table_ref}/{data_file.path}"
        path = CACHE_DIR / (hashlib.sha256(ref.encode()).hexdigest() + ".parquet")
        if not path.exists():
            partial = path.with_suffix(".partial")
            catalog.download(data_file, partial)
            partial.replace(path)
        paths.append(path)
    return paths


def _version(catalog: Catalog, version: int | None) -> Head:
    return catalog.head() if version is None else catalog.at_version(version)


def _source(paths: list[Path]) -> str:
    listed = ", ".join(sql_string(str(p)) for p in paths)
    return f"read_parquet([{listed}], hive_partitioning = false)"


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
    paths = _local_files(catalog, _version(catalog, version))
    if not paths:
        return [], 0
    with sandbox.connect(files=paths) as con:
        source = _source(paths)
        total = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]  # type: ignore[index]
        products = _rows(
            con, f"SELECT * FROM {source} ORDER BY sku LIMIT ? OFFSET ?", [limit, offset]
        )
    return products, total


def get_product(catalog: Catalog, sku: str, version: int | None = None) -> dict[str, Any] | None:
    paths = _local_files(catalog, _version(catalog, version))
    if not paths:
        return None
    with sandbox.connect(files=paths) as con:
        found = _rows(con, f"SELECT * FROM {_source(paths)} WHERE sku = ?", [sku])
    return found[0] if found else None
