"""The benchmark's input keeps its promised mix, checked independently of the generator's
own counters: record count, ~0.5% invalid records of every kind, multi-line
descriptions, and identical output for the same seed."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import duckdb
import pytest

from bench.floor import read_csv_sql
from bench.generate import COLUMNS, INVALID_KINDS, generate, invalid_lines

ROWS = 10_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("bench") / "data"
    return directory, generate(ROWS, directory, seed=7)


def records(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_files_hold_the_promised_number_of_records(generated: tuple[Path, dict]) -> None:
    directory, _ = generated
    base = records(directory / "base.csv")
    update = records(directory / "update.csv")
    assert base[0] == COLUMNS and update[0] == COLUMNS
    assert len(base) - 1 == ROWS
    assert len(update) - 1 == ROWS


def test_descriptions_carry_newlines_quotes_and_commas(generated: tuple[Path, dict]) -> None:
    directory, _ = generated
    descriptions = [row[3] for row in records(directory / "base.csv")[1:]]
    assert any("\n" in text for text in descriptions)
    assert any('"' in text for text in descriptions)
    assert all("," in text for text in descriptions)
    # Physical lines outnumber records: the newlines really are inside quoted fields.
    lines = (directory / "base.csv").read_text(encoding="utf-8").count("\n")
    assert lines > ROWS + 1


def test_update_mixes_unchanged_changed_and_new_products(generated: tuple[Path, dict]) -> None:
    directory, manifest = generated
    base = {row[0]: row for row in records(directory / "base.csv")[1:]}
    update = [row for row in records(directory / "update.csv")[1:] if len(row) == len(COLUMNS)]
    unchanged = sum(1 for row in update if base.get(row[0]) == row)
    new = sum(1 for row in update if row[0] not in base)
    assert 0.55 < unchanged / ROWS < 0.65
    assert 0.08 < new / ROWS < 0.12
    expected = manifest["files"]["update.csv"]["expected"]
    assert sum(expected[k] for k in ("created", "updated", "unchanged", "rejected")) == ROWS


def test_invalid_records_are_half_a_percent_of_every_kind(generated: tuple[Path, dict]) -> None:
    directory, manifest = generated
    source = str(directory / "update.csv")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE rows AS SELECT * FROM {read_csv_sql(source)}")
    (malformed,) = con.execute("SELECT count(DISTINCT line) FROM reject_errors").fetchone()
    rule_checks = {
        "negative_price": "TRY_CAST(price AS DOUBLE) < 0",
        "invalid_enum:status": "status NOT IN ('draft', 'live')",
        "invalid_currency": "currency IS NOT NULL AND NOT regexp_full_match(currency, '[A-Z]{3}')",
        "invalid_slug": "NOT regexp_full_match(slug, '[A-Za-z0-9._-]+')",
        "missing_required:name": "name IS NULL",
        "invalid_number:price": "price IS NOT NULL AND TRY_CAST(price AS DOUBLE) IS NULL",
    }
    found = {
        kind: con.execute(f"SELECT count(*) FROM rows WHERE {condition}").fetchone()[0]
        for kind, condition in rule_checks.items()
    }
    (duplicates,) = con.execute("SELECT count(*) - count(DISTINCT sku) FROM rows").fetchone()
    kinds = manifest["files"]["update.csv"]["invalid_kinds"]
    assert set(kinds) == set(INVALID_KINDS)
    assert all(count > 0 for count in found.values()) and duplicates > 0
    for kind, count in found.items():
        assert count == kinds[kind], kind
    assert duplicates == kinds["duplicate_sku"]
    assert malformed == sum(v for k, v in kinds.items() if k.startswith("malformed_row"))
    invalid = malformed + sum(found.values()) + duplicates
    assert invalid == manifest["files"]["update.csv"]["expected"]["rejected"]
    assert 0.003 < invalid / ROWS < 0.007


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    digests = []
    for attempt in range(2):
        directory = tmp_path / str(attempt)
        generate(500, directory, seed=11)
        digests.append(hashlib.sha256((directory / "update.csv").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_invalid_records_are_listed_at_the_line_where_they_start(
    generated: tuple[Path, dict],
) -> None:
    directory, manifest = generated
    lines = (directory / "update.csv").read_text(encoding="utf-8").split("\n")
    invalid = invalid_lines(directory)
    assert len(invalid) == manifest["files"]["update.csv"]["expected"]["rejected"]
    for number in invalid:
        # Line 1 is the header; each listed line opens a record with its SKU.
        assert lines[number - 1].startswith("SKU-"), number
    # The lines are physical ones: past the first multi-line description they exceed the
    # record numbers, which a record-counting report would print instead.
    with open(directory / "invalid-records.csv", encoding="utf-8") as handle:
        listed = [row.split(",") for row in handle.read().splitlines()[1:]]
    assert any(int(line) > int(record) + 2 for record, line, _ in listed)
