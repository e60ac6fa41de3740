"""Exactly once, in order (issue 15, scenario 2): an import whose own commit landed is
never merged again, and an import never commits over a later import of its catalog.

The faults come in through the engine's own seam: a Catalog subclass handed to the run
(`run_import(..., catalog=...)`), whose commit does what the store or another writer
would do at the worst moment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from productimport.engine.catalog import METADATA_KEY, Catalog, DataFile, Head
from productimport.engine.errors import PreconditionFailed
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import
from productimport.models.product import ImportResult
from tests.engine.catalog_rows import rows


def run_with(engine, catalog: Catalog, source: Path, **options: Any) -> tuple[ImportResult, int]:
    opts = ImportOptions(
        source=str(source), catalog="main", store=str(engine.store.root), **options
    )
    return run_import(opts, store=engine.store, catalog=catalog)


def record_of_head(engine) -> dict[str, Any]:
    """This project's record in the newest commit of the catalog (the Delta log)."""
    raw = engine.catalog().open_table().history(1)[0][METADATA_KEY]
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


class LostResponse(Catalog):
    """The first commit lands, but its response is lost: the S3 client retries the same
    conditional PUT, which now answers 412, and the engine sees PreconditionFailed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.commits = 0

    def commit(
        self,
        head: Head,
        buckets: int,
        replaced: list[int],
        added: list[DataFile],
        record: dict[str, Any],
    ) -> int:
        self.commits += 1
        version = super().commit(head, buckets, replaced, added, record)
        if self.commits == 1:
            raise PreconditionFailed(f"{self.table_ref} moved: version {version} exists")
        return version


@pytest.mark.parametrize("mode", ["upsert", "create"])
def test_an_import_whose_commit_landed_unseen_is_not_merged_again(seeded, mode):
    """Today's loop re-read the head (its own commit), merged the file again and
    reported that: upsert said 0 created (catalog unchanged), create failed with every
    row rejected as sku_exists, although the catalog held the import."""
    path = seeded.write("new.csv", rows(("D", "Delta", "4"), ("E", "Epsilon", "5")))
    catalog = LostResponse(seeded.store, "default", "main")
    result, code = run_with(seeded, catalog, path, mode=mode, import_id="lost-response")

    assert (result.phase, result.reason, code) == ("Succeeded", "ImportSucceeded", 0), result
    assert catalog.commits == 1  # no second merge, no second commit
    assert result.catalogVersion == 2 and "committed as version 2" in result.message
    c = result.counts
    assert (c.rows, c.created, c.updated, c.unchanged, c.rejected) == (2, 2, 0, 0, 0)
    history = seeded.catalog().history()
    assert [v.version for v in history] == [2, 1]
    assert history[0].importId == "lost-response" and history[0].counts == result.counts
    assert set(seeded.products()) == {"A", "B", "C", "D", "E"}
    # The Job's retry of the same import id reports the same, without applying it again.
    again, code = seeded.run_with_code(path, mode=mode, import_id="lost-response")
    assert code == 0 and again.catalogVersion == 2 and again.counts == result.counts
    assert len(seeded.catalog().history()) == 2


def test_an_import_admitted_earlier_does_not_commit_over_a_later_one(seeded):
    """Sequences 2 then 1 into one catalog: the late loader of import 1 (a Pod still
    running after its Job was re-created, say) is refused, and the catalog is unchanged."""
    newer = seeded.run(
        seeded.write("newer.csv", rows(("B", "Beta", "20"))), sequence=2, import_id="newer"
    )
    assert newer.catalogVersion == 2
    assert record_of_head(seeded)["sequence"] == 2  # the commit records its sequence
    before = seeded.products()

    older_file = seeded.write("older.csv", rows(("A", "Alpha", "10"), ("B", "Beta", "10")))
    older, code = seeded.run_with_code(older_file, sequence=1, import_id="older")
    assert (older.phase, older.reason, code) == ("Failed", "Superseded", 65), older
    assert "import newer (sequence 2)" in older.message and "sequence 1" in older.message
    assert older.catalogVersion == 2
    assert seeded.catalog().head().version == 2 and seeded.products() == before
    stored = seeded.store.get_with_etag(seeded.catalog().import_key("older", "result.json"))
    assert stored is not None and ImportResult.model_validate_json(stored[0]).reason == "Superseded"

    # A commit without a sequence (a CLI user's) does not make the older import newer.
    seeded.run(seeded.write("cli.csv", rows(("C", "Gamma", "30"))))
    older, code = seeded.run_with_code(older_file, sequence=1, import_id="older-again")
    assert (older.reason, code) == ("Superseded", 65)
    # Imports admitted later, and CLI imports without a sequence, commit as before.
    later = seeded.run(seeded.write("later.csv", rows(("A", "Alpha", "7"))), sequence=3)
    assert later.phase == "Succeeded" and later.catalogVersion == 4
    plain = seeded.run(seeded.write("plain.csv", rows(("A", "Alpha", "8"))))
    assert plain.phase == "Succeeded" and plain.catalogVersion == 5
    assert seeded.products()["A"]["price"] == 8


class Overtaken(Catalog):
    """Before the first commit lands, an import admitted later commits first."""

    def __init__(self, engine: Any, newer: Path) -> None:
        super().__init__(engine.store, "default", "main")
        self.engine, self.newer = engine, newer
        self.overtaken = False

    def commit(
        self,
        head: Head,
        buckets: int,
        replaced: list[int],
        added: list[DataFile],
        record: dict[str, Any],
    ) -> int:
        if not self.overtaken:
            self.overtaken = True
            assert self.engine.run(self.newer, sequence=5, import_id="newer").phase == "Succeeded"
        return super().commit(head, buckets, replaced, added, record)


def test_the_fence_holds_on_a_retry_after_a_later_import_committed(seeded):
    """The first attempt loses the race to import 5; the retry must not merge over it."""
    newer = seeded.write("newer.csv", rows(("A", "Alpha", "50")))
    catalog = Overtaken(seeded, newer)
    older_file = seeded.write("older.csv", rows(("A", "Alpha", "40"), ("F", "Phi", "6")))
    result, code = run_with(seeded, catalog, older_file, sequence=4, import_id="older")

    assert (result.phase, result.reason, code) == ("Failed", "Superseded", 65), result
    assert "import newer (sequence 5)" in result.message
    assert [v.importId for v in seeded.catalog().history()][:1] == ["newer"]
    assert seeded.catalog().head().version == 2
    assert seeded.products()["A"]["price"] == 50 and "F" not in seeded.products()


def test_the_cli_passes_the_sequence_into_the_commit(seeded):
    path = seeded.write("u.csv", rows(("A", "Alpha", "11")))
    store = ["--catalog", "main", "--store", str(seeded.store.root)]
    result, code = seeded.cli_json("import", str(path), *store, "--sequence", "7")
    assert code == 0 and result["catalogVersion"] == 2, result
    assert record_of_head(seeded)["sequence"] == 7
    late = seeded.write("late.csv", rows(("A", "Alpha", "12")))
    refused, code = seeded.cli_json("import", str(late), *store, "--sequence", "6")
    assert (refused["reason"], code) == ("Superseded", 65), refused
    bad, code = seeded.cli_json("import", str(late), *store, "--sequence", "0")
    assert (bad["reason"], code) == ("InvalidOptions", 65)
