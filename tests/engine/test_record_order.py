"""Records are numbered in file order even when DuckDB scans the file in parallel.

The first pass reads a file on every thread into a table that keeps insertion order,
and numbers each record by its position there (runner._checked); an operator in that
pass that does not keep order (a join: DuckDB makes one of an IN list, or of
list_contains on a constant list) numbers records wrongly, and every error record then
names the wrong line. The benchmark's generator knows the line of each invalid record
it wrote, so the whole error report can be checked against it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import checks
from bench.generate import generate, invalid_lines
from productimport.engine.options import ErrorPolicy
from tests.engine.conftest import Engine

# About 11 MB: DuckDB splits it between its threads (the 50,000-row file's lines were
# already wrong with an order-breaking first pass).
ROWS = 20_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("order") / "data"
    generate(ROWS, directory, seed=5)
    return directory


def test_every_error_record_names_the_line_of_its_invalid_record(
    engine: Engine, generated: Path
) -> None:
    result = engine.run(
        generated / "update.csv", threads=4, error_policy=ErrorPolicy(maxErrors=ROWS)
    )
    expected = invalid_lines(generated)
    assert result.phase == "Succeeded", result.message
    assert result.counts.rejected == len(expected)
    report = checks.error_lines(engine.store.root, result.model_dump(), expected)
    assert report.startswith("error report: all"), report
