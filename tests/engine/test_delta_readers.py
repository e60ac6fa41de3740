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


def test_each_file_carries_sku_and_updated_at_bounds_for_readers_to_skip_files(engine):
    """Delta statistics beyond the row count: a reader filtering on a SKU or on
    updated_at skips the files whose bounds exclude it (Spark, Trino and delta-rs do)."""
    from deltalake import DeltaTable

    engine.run(engine.write("a.csv", "sku,name,price\nM,Mu,1\nB,Beta,2\nX,Xi,3\n"))
    actions = pl.DataFrame(DeltaTable(engine.catalog().table_ref).get_add_actions(flatten=True))
    (row,) = actions.to_dicts()
    assert row["num_records"] == 3
    assert (row["min.sku"], row["max.sku"], row["null_count.sku"]) == ("B", "X", 0)
    stored = pl.read_delta(engine.catalog().table_ref)["updated_at"]
    assert row["min.updated_at"] == stored.min() and row["max.updated_at"] == stored.max()
