"""A catalog is a Delta Lake table any Delta reader opens: Polars here (through delta-rs),
from a directory store and straight from MinIO (docs/operations.md shows Spark, Trino,
DuckDB and pandas too)."""

from __future__ import annotations

import uuid

import polars as pl
import pytest

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import open_store
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import


def test_polars_reads_every_version_of_a_catalog(engine):
    engine.run(engine.write("a.csv", "sku,name,price\nA,Alpha,1.5\nB,Beta,2\n"))
    engine.run(engine.write("b.csv", "sku,name,price\nB,Beta,3\nC,Gamma,4\n"))
    uri = engine.catalog().table_ref

    now = pl.read_delta(uri).sort("sku")
    assert now["sku"].to_list() == ["A", "B", "C"]
    assert [float(p) for p in now["price"]] == [1.5, 3.0, 4.0]
    assert now["bucket"].to_list() == [0, 0, 0]  # a small catalog: one bucket
    first = pl.read_delta(uri, version=1).sort("sku")
    assert [float(p) for p in first["price"]] == [1.5, 2.0]
    # What a reader sees is what the project's own API returns.
    assert set(engine.products()) == set(now["sku"])


@pytest.mark.minio
def test_polars_reads_a_catalog_straight_from_minio(cluster, engine):
    store = open_store("s3://catalog")  # the dev MinIO, as the loader reaches it
    namespace = f"readers-{uuid.uuid4().hex[:8]}"
    source = engine.write("a.csv", "sku,name,price\nA,Alpha,1.5\nB,Beta,2\n")
    result, code = run_import(
        ImportOptions(source=str(source), catalog="main", namespace=namespace), store=store
    )
    assert code == 0, result
    catalog = Catalog(store, namespace, "main")
    uri, options = catalog.table.table_location()
    assert uri.startswith("s3://catalog-")  # the table's own bucket
    found = pl.scan_delta(uri, storage_options=options).filter(pl.col("sku") == "B").collect()
    assert found["name"].to_list() == ["Beta"]
