"""A partitioned import (prepare, N merge workers, commit) leaves the catalog exactly as
the one-Pod import of the same file does, in one commit, and fails safe when a step's
work is missing or the catalog moved under it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import
from productimport.models.product import ImportResult
from tests.engine.catalog_rows import rows
from tests.engine.conftest import Engine

# Fields that differ between two runs by nature: generated ids and this run's timestamps.
RUN_FIELDS = ("id", "created_at", "updated_at", "import_id")

BASE = [(f"P{i:03d}", f"Product {i}", str(i)) for i in range(40)]
# Updates 10, leaves 20 as they are, adds 15, and three rejected rows (no name).
CHANGE = [
    *((sku, f"{name} v2", price) for sku, name, price in BASE[:10]),
    *BASE[10:30],
    *((f"N{i:03d}", f"New {i}", "9") for i in range(15)),
    ("P030", "", "1"),
    ("X1", "", "2"),
    ("X2", "", "3"),
]
LENIENT = {"error_policy": {"maxErrors": None, "maxErrorRatio": None}}


def steps(
    engine: Engine, source: str, workers: int, catalog: str = "main", **options: Any
) -> tuple[list[ImportResult | None], list[int]]:
    """The three steps, as the operator's Jobs run them, worker by worker."""
    common = {
        "source": source,
        "catalog": catalog,
        "store": str(engine.store.root),
        "import_id": "partitioned-1",
        "workers": workers,
        **options,
    }
    runs = [{"stage": "prepare"}]
    runs += [{"stage": "merge", "worker": w} for w in range(workers)]
    runs += [{"stage": "commit"}]
    results, codes = [], []
    for step in runs:
        result, code = run_import(ImportOptions(**common, **step), store=engine.store)
        results.append(result)
        codes.append(code)
    return results, codes


def stepper(engine: Engine, import_id: str) -> Callable[..., tuple[ImportResult | None, int]]:
    """Runs one step at a time of one two-worker import of CHANGE into catalog "many"."""
    change = engine.write("change.csv", rows(*CHANGE))

    def step(stage: str, worker: int = 0) -> tuple[ImportResult | None, int]:
        options = ImportOptions(
            source=str(change), catalog="many", store=str(engine.store.root),
            import_id=import_id, stage=stage, workers=2, worker=worker, **LENIENT,
        )  # fmt: skip
        return run_import(options, store=engine.store)

    return step


def content(engine: Engine, catalog: str = "main") -> dict[str, dict[str, Any]]:
    return {
        sku: {k: v for k, v in p.items() if k not in RUN_FIELDS}
        for sku, p in engine.products(catalog).items()
    }


def seed_both(engine: Engine) -> None:
    base = engine.write("base.csv", rows(*BASE))
    for catalog in ("one", "many"):
        assert engine.run(base, catalog=catalog).phase == "Succeeded"


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("mode", ["upsert", "replace"])
def test_partitioned_import_equals_the_one_pod_import(engine, monkeypatch, workers, mode):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "8")  # 40 products: 8 buckets
    seed_both(engine)
    change = engine.write("change.csv", rows(*CHANGE))
    single = engine.run(change, catalog="one", mode=mode, **LENIENT)

    results, codes = steps(engine, str(change), workers, catalog="many", mode=mode, **LENIENT)
    assert codes == [0] * len(codes)
    assert results[:-1] == [None] * (len(results) - 1)  # only the commit step reports
    final = results[-1]
    assert final is not None and final.phase == "Succeeded", final
    assert final.counts == single.counts
    assert (final.counts.created, final.counts.updated, final.counts.rejected) == (15, 10, 3)
    assert final.catalogVersion == 2  # every bucket in one commit
    assert content(engine, "many") == content(engine, "one")
    assert [e.line for e in final.errors] == [e.line for e in single.errors]
    assert engine.catalog("many").head().buckets == engine.catalog("one").head().buckets == 8


def test_a_split_catalog_is_split_by_the_merge_workers(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "10")
    seed_both(engine)  # 40 products: 4 buckets
    grown = engine.write("grown.csv", rows(*((f"G{i:03d}", f"Grown {i}", "2") for i in range(60))))
    single = engine.run(grown, catalog="one")
    results, _codes = steps(engine, str(grown), 3, catalog="many")
    final = results[-1]
    assert final is not None and final.counts == single.counts
    assert engine.catalog("many").head().buckets == engine.catalog("one").head().buckets == 8
    assert content(engine, "many") == content(engine, "one")


def test_a_file_that_changes_nothing_commits_nothing(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "8")
    seed_both(engine)
    results, _codes = steps(engine, str(engine.write("same.csv", rows(*BASE[:20]))), 2, "many")
    final = results[-1]
    assert final is not None and final.phase == "Succeeded"
    assert final.catalogVersion == 1 and final.counts.unchanged == 20
    assert len(engine.catalog("many").history()) == 1


def test_the_commit_imports_again_when_the_catalog_moved_since_prepare(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "8")
    seed_both(engine)
    step = stepper(engine, "moved-1")
    for stage, worker in (("prepare", 0), ("merge", 0), ("merge", 1)):
        step(stage, worker)
    # Meanwhile another import moves the catalog: the merged buckets are stale.
    engine.run(engine.write("other.csv", rows(("P000", "Changed elsewhere", "5"))), catalog="many")
    final, code = step("commit")
    assert code == 0 and final is not None and final.phase == "Succeeded"
    assert final.catalogVersion == 3
    products = engine.products("many")
    assert products["P000"]["name"] == "Product 0 v2"  # this import's file, applied last
    assert len(products) == 55


def test_a_missing_merge_record_fails_the_commit_and_commits_nothing(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "8")
    seed_both(engine)
    step = stepper(engine, "missing-1")
    step("prepare")
    step("merge", 0)  # merge worker 1 of 2 never ran
    final, code = step("commit")
    assert code != 0 and final is not None and final.phase == "Failed"
    assert final.reason == "InternalError" and "merge Pod 1 of 2" in final.message
    assert engine.catalog("many").head().version == 1


def test_a_file_over_the_error_policy_fails_in_prepare(engine, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_ROWS_PER_BUCKET", "8")
    seed_both(engine)
    change = engine.write("change.csv", rows(*CHANGE))
    options = ImportOptions(
        source=str(change), catalog="many", store=str(engine.store.root), stage="prepare",
        workers=2, error_policy={"maxErrors": 1},
    )  # fmt: skip
    result, code = run_import(options, store=engine.store)
    assert code != 0 and result is not None
    assert (result.phase, result.reason) == ("Failed", "ErrorPolicyExceeded")
    assert result.errorsRef and len(result.errors) == 3
