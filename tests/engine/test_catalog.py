"""Catalog semantics: modes, counts, dry run, idempotency, rollback, atomicity, races."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from productimport.engine.errors import ImportFailure, PreconditionFailed
from tests.engine.catalog_rows import HEADER, rows


def test_upsert_counts_created_updated_unchanged(seeded):
    result = seeded.run(
        seeded.write("u.csv", rows(("A", "Alpha", "1"), ("B", "Beta", "9"), ("D", "Delta", "4")))
    )
    c = result.counts
    assert (c.rows, c.created, c.updated, c.unchanged, c.deleted, c.rejected) == (3, 1, 1, 1, 0, 0)
    assert result.catalogVersion == 2
    assert set(seeded.products()) == {"A", "B", "C", "D"}


def test_an_import_that_changes_nothing_writes_nothing(seeded):
    table = seeded.store.root / "default" / "main" / "products"
    before = sorted(p.relative_to(table) for p in table.rglob("*") if p.is_file())
    same = rows(("A", "Alpha", "1"), ("B", "Beta", "2"), ("C", "Gamma", "3"))
    result = seeded.run(seeded.write("same.csv", same), mode="replace")
    assert result.counts.unchanged == 3 and result.catalogVersion == 1
    assert len(list(seeded.catalog().history())) == 1
    after = sorted(p.relative_to(table) for p in table.rglob("*") if p.is_file())
    assert after == before  # no data file, no log entry


def test_absent_columns_keep_existing_values(seeded):
    seeded.run(seeded.write("names.csv", "sku,name\nA,Renamed\n"))
    assert seeded.products()["A"]["name"] == "Renamed"
    assert seeded.products()["A"]["price"] == 1  # the file had no price column


def test_attributes_merge_key_by_key_and_compare_in_any_order(engine):
    engine.run(engine.write("a.csv", "sku,name,brand,color\nA,Alpha,Acme,red\nB,Beta,Bolt,\n"))
    assert engine.products()["A"]["attributes"] == {"brand": "Acme", "color": "red"}
    assert engine.products()["B"]["attributes"] == {"brand": "Bolt"}  # blank cells dropped

    # Same values, other column order; a subset; a blank cell: nothing changes.
    same = "sku,name,color,brand\nA,Alpha,red,Acme\nB,Beta,,\n"
    assert engine.run(engine.write("same.csv", same)).counts.unchanged == 2
    subset = engine.run(engine.write("subset.csv", "sku,name,color\nA,Alpha,red\nB,Beta,\n"))
    assert (subset.counts.unchanged, subset.catalogVersion) == (2, 1)

    # The file's value wins for its keys; keys it does not bring stay; new keys are added.
    result = engine.run(
        engine.write("new.csv", "sku,name,color,size\nA,Alpha,blue,\nB,Beta,green,XL\nC,Gamma,,S\n")
    )
    counts = result.counts
    assert (counts.created, counts.updated, counts.unchanged) == (1, 2, 0)
    products = engine.products()
    assert products["A"]["attributes"] == {"brand": "Acme", "color": "blue"}
    assert products["B"]["attributes"] == {"brand": "Bolt", "color": "green", "size": "XL"}
    assert products["C"]["attributes"] == {"size": "S"}

    # A file with exactly the product's keys replaces the values (no merge needed).
    engine.run(engine.write("full.csv", "sku,name,brand,color\nA,Alpha,Apex,teal\n"))
    assert engine.products()["A"]["attributes"] == {"brand": "Apex", "color": "teal"}


def rewrite_current_files(engine, select: str, options: str) -> list[Path]:
    """Rewrite the current version's files in place as `SELECT {select}` of themselves,
    written with COPY `options`: files as an older engine would have left them."""
    catalog = engine.catalog()
    rewritten = []
    for data_file in catalog.head().files:
        path = engine.store.root / "default" / "main" / "products" / data_file.path
        scratch = path.with_suffix(".rewritten.parquet")
        duckdb.execute(
            f"COPY (SELECT {select} FROM read_parquet('{path}', hive_partitioning = false)) "
            f"TO '{scratch}' ({options})"
        )
        scratch.replace(path)
        rewritten.append(path)
    assert rewritten
    return rewritten


@pytest.mark.parametrize(
    "rewrite",
    [
        # digests of another DuckDB version (zeros here: trusted, they would match nothing)
        "* REPLACE (0::BIGINT AS content_digest)",
        # a snapshot from before content digests were kept
        "* EXCLUDE (content_digest)",
    ],
)
def test_content_digests_are_trusted_only_from_the_same_hash(engine, rewrite):
    first = "sku,name,description\nA,Alpha,first\nB,Beta,second\n"
    engine.run(engine.write("a.csv", first))
    rewrite_current_files(
        engine,
        rewrite,
        "FORMAT parquet, KV_METADATA {productimport_content_digest: 'hash(name) duckdb 0.1'}",
    )

    same = engine.run(engine.write("same.csv", first))
    assert (same.counts.unchanged, same.counts.updated) == (2, 0)
    changed = engine.run(
        engine.write("b.csv", "sku,name,description\nA,Alpha,new\nB,Beta,second\n")
    )
    assert (changed.counts.updated, changed.counts.unchanged) == (1, 1)
    assert "content_digest" not in engine.products()["A"]  # the engine's own column
    # The next version carries this engine's digests again: unchanged stays unchanged.
    again = engine.run(engine.write("c.csv", "sku,name,description\nA,Alpha,new\nB,Beta,second\n"))
    assert (again.counts.unchanged, again.counts.updated) == (2, 0)


def test_product_id_is_stable_across_updates(seeded):
    before = seeded.products()["B"]["id"]
    seeded.run(seeded.write("u.csv", rows(("B", "Beta 2", "2"))))
    assert seeded.products()["B"]["id"] == before


def test_create_mode_rejects_existing_skus(seeded):
    result = seeded.run(
        seeded.write("c.csv", rows(("A", "Again", "1"), ("E", "Eps", "5"))),
        mode="create",
        error_policy={"maxErrorRatio": 1},
    )
    assert [e.code for e in result.errors] == ["sku_exists"]
    assert (result.counts.created, result.counts.rejected) == (1, 1)
    assert seeded.products()["A"]["name"] == "Alpha"


def test_update_mode_rejects_unknown_skus(seeded):
    result = seeded.run(
        seeded.write("u.csv", rows(("A", "Alpha 2", "1"), ("Z", "Zed", "5"))),
        mode="update",
        error_policy={"maxErrorRatio": 1},
    )
    assert [e.code for e in result.errors] == ["sku_not_found"]
    assert "Z" not in seeded.products()


def test_replace_deletes_missing_products_but_never_one_with_a_rejected_row(seeded):
    content = rows(("A", "Alpha", "1"), ("B", "Beta", "-2"))  # B's row is invalid
    result = seeded.run(
        seeded.write("r.csv", content), mode="replace", error_policy={"maxErrorRatio": 1}
    )
    assert (result.counts.deleted, result.counts.rejected) == (1, 1)
    assert set(seeded.products()) == {"A", "B"}  # C deleted, B kept as it was
    assert seeded.products()["B"]["price"] == 2


def test_replace_with_an_empty_file_is_refused(seeded):
    result, code = seeded.run_with_code(seeded.write("empty.csv", HEADER), mode="replace")
    assert result.phase == "Failed" and code == 65
    assert len(seeded.products()) == 3


def test_dry_run_computes_counts_and_commits_nothing(seeded):
    result = seeded.run(
        seeded.write("u.csv", rows(("A", "New", "1"), ("N", "New", "1"))), dry_run=True
    )
    assert (result.counts.created, result.counts.updated, result.dryRun) == (1, 1, True)
    assert result.catalogVersion == 1
    assert "N" not in seeded.products() and seeded.products()["A"]["name"] == "Alpha"


def test_same_import_id_is_applied_once(seeded):
    path = seeded.write("u.csv", rows(("A", "Alpha", "10")))
    first = seeded.run(path, import_id="job-1")
    # Someone else changes A in between; re-running job-1 must not re-apply it.
    seeded.run(seeded.write("v.csv", rows(("A", "Alpha", "20"))))
    again = seeded.run(path, import_id="job-1")
    assert again.catalogVersion == first.catalogVersion == 2
    assert again.counts == first.counts
    assert seeded.products()["A"]["price"] == 20


def test_rollback_makes_an_earlier_version_current_as_a_new_version(seeded):
    seeded.run(seeded.write("u.csv", rows(("A", "Changed", "1"))))
    manifest = seeded.catalog().rollback(1)
    assert manifest.version == 3 and manifest.rollbackOf == 1
    assert seeded.products()["A"]["name"] == "Alpha"
    assert [m.version for m in seeded.catalog().history()] == [3, 2, 1]


def test_a_commit_on_a_stale_version_is_refused(seeded):
    catalog = seeded.catalog()
    head = catalog.head()
    record = {"importId": "x", "products": 3}
    assert catalog.commit(head, head.buckets, [], [], record) == 2
    with pytest.raises(PreconditionFailed):
        catalog.commit(head, head.buckets, [], [], {"importId": "y", "products": 3})
    assert [v.version for v in catalog.history()] == [2, 1]
    assert catalog.history()[0].importId == "x"


def test_concurrent_imports_lose_no_update(engine):
    files = [
        engine.write(f"part{i}.csv", rows(*[(f"P{i}-{j}", "n", "1") for j in range(50)]))
        for i in range(4)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda f: engine.run(f), files))
    assert all(r.phase == "Succeeded" for r in results)
    assert sorted(r.catalogVersion for r in results) == [1, 2, 3, 4]
    assert len(engine.products()) == 200


@pytest.mark.parametrize("point", ["after-snapshot-upload", "before-pointer-move"])
def test_sigkill_mid_commit_leaves_the_previous_version_intact(seeded, point):
    before = seeded.products()
    path = seeded.write("u.csv", rows(("A", "Killed", "1"), ("K", "Killed", "1")))
    done = seeded.cli(
        "import",
        str(path),
        "--catalog",
        "main",
        "--store",
        str(seeded.store.root),
        env={"PRODUCTIMPORT_FAILPOINT": point},
    )
    assert done.returncode == -9  # SIGKILL, no cleanup ran
    assert seeded.catalog().head().version == 1
    assert seeded.products() == before
    # The next import works normally on top of the intact version.
    assert seeded.run(path).catalogVersion == 2


def test_killed_after_pointer_move_is_not_applied_twice_on_retry(seeded):
    path = seeded.write("u.csv", rows(("A", "Once", "1")))
    args = [
        "import",
        str(path),
        "--catalog",
        "main",
        "--store",
        str(seeded.store.root),
        "--import-id",
        "retry-me",
    ]
    killed = seeded.cli(*args, env={"PRODUCTIMPORT_FAILPOINT": "after-pointer-move"})
    assert killed.returncode == -9
    result, code = seeded.cli_json(*args)  # the Job's retry
    assert code == 0 and result["catalogVersion"] == 2 and result["counts"]["updated"] == 1
    assert [m.version for m in seeded.catalog().history()] == [2, 1]


def test_cli_json_contract_and_exit_codes(engine):
    good = engine.write("g.csv", rows(("A", "Alpha", "1")))
    result, code = engine.cli_json(
        "import", str(good), "--catalog", "main", "--store", str(engine.store.root)
    )
    assert code == 0
    assert {"phase", "counts", "catalogVersion", "errorsRef", "message"} <= set(result)
    assert set(result["counts"]) == {
        "rows",
        "created",
        "updated",
        "unchanged",
        "deleted",
        "rejected",
    }
    missing, code = engine.cli_json(
        "import",
        str(engine.root / "nope.csv"),
        "--catalog",
        "main",
        "--store",
        str(engine.store.root),
    )
    assert (missing["phase"], missing["reason"], code) == ("Failed", "SourceNotFound", 66)
    bad = engine.write("b.csv", rows(("A", "Alpha", "-1")))
    failed, code = engine.cli_json(
        "import", str(bad), "--catalog", "main", "--store", str(engine.store.root)
    )
    assert (failed["phase"], code) == ("Failed", 65)


def test_cli_products_versions_and_rollback(seeded):
    store = ["--catalog", "main", "--store", str(seeded.store.root)]
    seeded.run(seeded.write("u.csv", rows(("A", "Changed", "1"))))
    products, code = seeded.cli_json("products", "list", *store)
    assert code == 0 and [p["sku"] for p in products] == ["A", "B", "C"]
    versions, _ = seeded.cli_json("catalog", "versions", *store)
    assert [v["version"] for v in versions] == [2, 1]
    rolled, code = seeded.cli_json("catalog", "rollback", "--to", "1", *store)
    assert code == 0 and rolled["version"] == 3
    human = seeded.cli("products", "list", *store)
    assert "Alpha" in human.stdout


def test_catalog_name_rules_are_enforced(engine):
    result, code = engine.run_with_code(
        engine.write("g.csv", rows(("A", "Alpha", "1"))), catalog="Bad/Name"
    )
    assert (result.phase, result.reason, code) == ("Failed", "InvalidOptions", 65)
    assert "not a valid name" in result.message


def test_python_m_entry_point_exists():
    done = subprocess.run(
        [sys.executable, "-m", "productimport.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "import" in done.stdout


@pytest.mark.parametrize("limit", ["1MB", "20MB"])  # 1MB fails while parsing, 20MB later
def test_a_file_too_big_for_the_memory_limit_fails_with_advice_and_changes_nothing(
    seeded, shared_data, limit
):
    before = seeded.products()
    magento = shared_data / "magento2-sample-data" / "products.csv"
    result, code = seeded.cli_json(
        "import", str(magento), "--catalog", "main", "--store", str(seeded.store.root),
        "--memory-limit", limit,
    )  # fmt: skip
    assert (result["phase"], result["reason"], code) == ("Failed", "OutOfMemory", 71), result
    assert f"memory limit ({limit})" in result["message"]
    assert "spec.job.memoryLimit" in result["message"]
    assert result["catalogVersion"] == 1 and seeded.products() == before


@pytest.mark.parametrize("import_id", ["../other/imports/x", "a/b", "..", "-rf", "x" * 129])
def test_an_import_id_that_is_not_one_path_segment_is_refused(engine, import_id):
    """The id names the import's folder (imports/<id>/): '../..' would write into another
    catalog's folder of a local store. Refused before anything is written."""
    good = engine.write("g.csv", rows(("A", "Alpha", "1")))
    store = engine.store.root
    result, code = engine.cli_json("import", str(good), "--catalog", "main", "--store",
                                   str(store), "--import-id", import_id)  # fmt: skip
    assert (result["phase"], result["reason"], code) == ("Failed", "InvalidOptions", 65)
    assert "import_id" in result["message"]
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))


def test_a_catalog_that_outgrows_its_buckets_is_split_in_one_commit(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "10")
    first = [(f"S{i:03d}", f"Small {i}", "1") for i in range(15)]
    engine.run(engine.write("a.csv", rows(*first)))
    assert engine.catalog().head().buckets == 2
    more = [(f"G{i:03d}", f"Grown {i}", "2") for i in range(50)]
    grown = engine.run(engine.write("b.csv", rows(*first[:5], *more)))
    c = grown.counts
    assert (c.created, c.unchanged, grown.catalogVersion) == (50, 5, 2)

    head = engine.catalog().head()
    assert head.buckets == 8 and head.products == 65
    assert set(engine.products()) == {sku for sku, _, _ in first + more}
    # Every product is in the bucket its key hashes to, and the old files are gone.
    root = engine.store.root / "default" / "main" / "products"
    for data_file in head.files:
        misplaced = duckdb.execute(
            f"SELECT count(*) FROM read_parquet('{root / data_file.path}', "
            "hive_partitioning = false) WHERE md5_number_upper(sku) % 8 <> ?",
            [data_file.bucket],
        ).fetchone()[0]
        assert misplaced == 0, data_file
    assert {f.bucket for f in head.files} <= set(range(8))
    # Rolling back restores the earlier layout with the earlier products; imports go on.
    engine.catalog().rollback(1)
    assert engine.catalog().head().buckets == 2 and len(engine.products()) == 15
    assert engine.run(engine.write("c.csv", rows(("S000", "Renamed", "1")))).counts.updated == 1


def test_replace_deletes_in_buckets_the_file_does_not_touch(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "2")
    products = [(f"R{i}", f"Product {i}", "1") for i in range(8)]
    engine.run(engine.write("a.csv", rows(*products)))
    head = engine.catalog().head()
    assert head.buckets == 4 and len({f.bucket for f in head.files}) > 1
    # Keeps R0, updates R1, names R2 in a rejected row (kept), and deletes the other five,
    # whichever buckets they are in.
    result = engine.run(
        engine.write("r.csv", rows(("R0", "Product 0", "1"), ("R1", "New", "1"), ("R2", "", "1"))),
        mode="replace",
        error_policy={"maxErrors": None, "maxErrorRatio": None},
    )
    c = result.counts
    assert (c.unchanged, c.updated, c.rejected, c.deleted) == (1, 1, 1, 5)
    assert set(engine.products()) == {"R0", "R1", "R2"}
    assert engine.catalog().head().products == 3


def test_vacuum_keeps_what_the_window_needs_and_never_the_current_version(seeded):
    seeded.run(seeded.write("u.csv", rows(("A", "Changed", "1"))))
    catalog = seeded.catalog()
    assert catalog.vacuum(retention_hours=1) == []  # version 1's file was removed just now
    listed = catalog.vacuum(retention_hours=0, dry_run=True)
    assert len(listed) == 1 and "bucket=0/" in listed[0]
    assert len(catalog.vacuum(retention_hours=0)) == 1
    # The current version is whole; version 1 is past the window: no longer restorable.
    assert seeded.products()["A"]["name"] == "Changed" and len(seeded.products()) == 3
    after_vacuum = catalog.head().version  # vacuum records itself in the log too
    with pytest.raises(ImportFailure, match=r"(?i)not found|missing|no such file"):
        catalog.rollback(1)
    assert catalog.head().version == after_vacuum
    assert [v.version for v in catalog.history()] == [2, 1]  # imports only
    # Imports go on after a vacuum, with the bucket count the table had.
    assert seeded.run(seeded.write("v.csv", rows(("D", "Delta", "4")))).counts.created == 1
