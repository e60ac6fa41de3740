"""Catalog retention (Catalog.retain): a catalog keeps exactly its last N versions, every
file those versions and the current one need, and nothing else; on real Delta tables in
a directory store and on the dev MinIO."""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl
import pytest

from productimport.engine.catalog import LOG_PROPERTIES, Catalog
from productimport.engine.errors import ImportFailure, InvalidOptions
from productimport.engine.objectstore import open_store
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import
from tests.engine.catalog_rows import rows


def _contents(catalog: Catalog, version: int) -> list[tuple[str, str]]:
    """(sku, name) of a version, read by Polars straight from the table's own files
    (never a local copy of them): what any Delta reader gets."""
    uri, options = catalog.table.table_location()
    frame = pl.read_delta(uri, version=version, storage_options=options or None)
    return sorted(zip(frame["sku"].to_list(), frame["name"].to_list(), strict=True))


def _import_versions(engine, count: int, start: int = 0) -> None:
    """`count` imports, each renaming product A and adding one product: a version each."""
    for i in range(start, start + count):
        path = engine.write(f"v{i}.csv", rows(("A", f"Alpha {i}", "1"), (f"S{i:03d}", "S", "2")))
        assert engine.run(path).catalogVersion is not None


def _files_of(catalog: Catalog, version: int) -> set[str]:
    return {f.path for f in catalog.at_version(version).files}


def test_after_more_imports_than_kept_exactly_the_last_n_versions_stay(engine):
    _import_versions(engine, 15)
    catalog = engine.catalog()
    assert [v.version for v in catalog.history()] == list(range(15, 0, -1))
    before = {v: _contents(catalog, v) for v in range(1, 16)}
    files = {v: _files_of(catalog, v) for v in range(1, 16)}

    retained = catalog.retain(keep_versions=5)

    assert retained.kept == [15, 14, 13, 12, 11]
    # History lists exactly the kept versions, each readable as it was.
    assert [v.version for v in catalog.history()] == [15, 14, 13, 12, 11]
    for version in retained.kept:
        assert _contents(catalog, version) == before[version]
    assert engine.products()["A"]["name"] == "Alpha 14"  # the current content, unchanged
    # The older versions are gone: not listed, not readable, their own files deleted.
    for version in range(1, 11):
        with pytest.raises((ImportFailure, InvalidOptions)):
            catalog.at_version(version)
    kept_files = set().union(*(files[v] for v in retained.kept))
    gone = set().union(*(files[v] for v in range(1, 11))) - kept_files
    assert gone and set(retained.deleted) == gone
    assert not any(catalog.table.exists(path) for path in gone)
    assert all(catalog.table.exists(path) for path in kept_files)
    # A second pass with nothing new writes nothing, not even a log entry.
    version = catalog.current_table().version()
    assert catalog.retain(keep_versions=5).deleted == []
    assert catalog.current_table().version() == version

    # Each kept version can be rolled back to, after retention ran.
    for target in retained.kept:
        rolled = catalog.rollback(target)
        assert rolled.rollbackOf == target
        assert _contents(catalog, rolled.version) == before[target]
        assert sorted((p["sku"], p["name"]) for p in engine.products().values()) == before[target]
    # Imports go on as before.
    _import_versions(engine, 1, start=15)
    assert engine.products()["A"]["name"] == "Alpha 15"


def test_a_rollback_that_brought_old_files_back_never_loses_one(engine, monkeypatch):
    """Version 3's files were removed by version 4, brought back by a rollback (version
    13), then partly replaced again (version 14): retention of the last two versions
    keeps every file of the rollback, so it reads whole and can be rolled back to."""
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "4")  # several buckets, files
    engine.run(
        engine.write("base.csv", rows(*[(f"B{i:02d}", f"Base {i}", "1") for i in range(16)]))
    )
    _import_versions(engine, 11)
    catalog = engine.catalog()
    assert catalog.head().buckets > 1 and catalog.head().version == 12
    old = _contents(catalog, 3)
    assert catalog.rollback(3).version == 13
    _import_versions(engine, 1, start=20)  # version 14 changes some buckets only
    restored = _files_of(catalog, 13)
    assert restored == _files_of(catalog, 3) and restored - _files_of(catalog, 14)

    retained = catalog.retain(keep_versions=2)

    assert retained.kept == [14, 13]
    assert not set(retained.deleted) & (restored | _files_of(catalog, 14))
    assert all(catalog.table.exists(path) for path in restored)
    assert _contents(catalog, 13) == old
    catalog.rollback(13)
    assert sorted((p["sku"], p["name"]) for p in engine.products().values()) == old
    # The current version itself is the rollback now: retention keeps it whole again.
    retained = catalog.retain(keep_versions=1)
    assert all(catalog.table.exists(f.path) for f in catalog.head().files)
    assert _contents(catalog, retained.kept[0]) == old


def test_files_no_version_references_go_after_the_orphan_age_only(seeded):
    """A loader killed between its upload and its commit (as when its import is deleted
    while it runs) leaves files no version names: gone once older than orphan_hours,
    never before (an import's files are unreferenced until it commits)."""
    catalog = seeded.catalog()
    before = _contents(catalog, 1)
    path = seeded.write("killed.csv", rows(("A", "Killed", "1"), ("K", "Killed", "1")))
    killed = seeded.cli(
        "import", str(path), "--catalog", "main", "--store", str(seeded.store.root),
        env={"PRODUCTIMPORT_FAILPOINT": "before-pointer-move"},
    )  # fmt: skip
    assert killed.returncode == -9
    current = {f.path for f in catalog.head().files}
    data = {k for k in catalog.table.list("") if k.startswith("bucket=")}
    orphans = data - current
    assert orphans, "the killed loader uploaded its bucket's file"

    assert catalog.retain(keep_versions=5, orphan_hours=1).deleted == []  # too young
    assert all(catalog.table.exists(k) for k in orphans)
    assert set(catalog.retain(keep_versions=5, orphan_hours=0).deleted) == orphans
    assert not any(catalog.table.exists(k) for k in orphans)
    assert _contents(catalog, 1) == before and [v.version for v in catalog.history()] == [1]
    assert {f.path for f in catalog.head().files} == current


def test_the_log_keeps_every_kept_version_past_an_automatic_checkpoint(engine):
    """delta-rs checkpoints on its own (every delta.checkpointInterval commits); trimming
    the log up to such a checkpoint would lose kept versions older than it."""
    _import_versions(engine, 1)
    catalog = engine.catalog()
    catalog.current_table().alter.set_table_properties({"delta.checkpointInterval": "3"})
    _import_versions(engine, 11, start=1)  # versions 3..13, checkpoints at 5, 8, 11
    records = [v.version for v in catalog.history()]
    checkpoints = [k for k in catalog.table.list("_delta_log/") if "checkpoint.parquet" in k]
    assert len(checkpoints) >= 3
    before = {v: _contents(catalog, v) for v in records[:8]}

    retained = catalog.retain(keep_versions=8)

    assert retained.kept == records[:8]
    for version in retained.kept:
        assert _contents(catalog, version) == before[version]
    # Once the kept versions are all younger than the table's log properties, the log is
    # trimmed to exactly them.
    _import_versions(engine, 9, start=12)
    retained = catalog.retain(keep_versions=8)
    assert [v.version for v in catalog.history()] == retained.kept
    assert LOG_PROPERTIES.items() <= dict(catalog.current_table().metadata().configuration).items()


def test_keep_versions_below_one_is_refused(seeded):
    with pytest.raises(InvalidOptions):
        seeded.catalog().retain(keep_versions=0)


@pytest.mark.minio
def test_retention_on_minio_keeps_the_last_versions_and_deletes_the_others(cluster, tmp_path):
    store = open_store("s3://catalog")  # the dev MinIO, as the operator reaches it
    namespace = f"retain-{uuid.uuid4().hex[:8]}"
    for i in range(6):
        source = Path(tmp_path / f"v{i}.csv")
        source.write_text(rows(("A", f"Alpha {i}", "1"), (f"S{i}", "S", "2")))
        result, code = run_import(
            ImportOptions(source=str(source), catalog="main", namespace=namespace), store=store
        )
        assert code == 0, result
    catalog = Catalog(store, namespace, "main")
    before = {v: _contents(catalog, v) for v in range(1, 7)}
    files = {v: _files_of(catalog, v) for v in range(1, 7)}

    retained = catalog.retain(keep_versions=3)

    assert retained.kept == [6, 5, 4]
    assert [v.version for v in catalog.history()] == [6, 5, 4]
    for version in retained.kept:
        assert _contents(catalog, version) == before[version]
    gone = set().union(*(files[v] for v in (1, 2, 3))) - set().union(*(files[v] for v in (4, 5, 6)))
    assert gone and not any(catalog.table.exists(path) for path in gone)
    logged = [k for k in catalog.table.list("_delta_log/") if k.endswith(".json")]
    assert min(int(Path(k).stem) for k in logged) == 4  # the log starts at the oldest kept
    catalog.rollback(4)
    assert _contents(catalog, catalog.history()[0].version) == before[4]
