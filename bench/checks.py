"""Checks that the engine's result matches what the generator put into the file.

A benchmark of an importer that silently drops or misnumbers rows measures nothing, so
each measured import is compared with the generator's manifest: the counts, and the
physical line of every invalid record against the engine's full error report.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path


def counts(document: dict, expected: dict) -> str:
    got = document.get("counts", {})
    diffs = [f"{k} {got.get(k)} (expected {v})" for k, v in expected.items() if got.get(k) != v]
    return "counts as expected" if not diffs else "COUNTS DIFFER: " + ", ".join(diffs)


def error_report_path(store: Path, document: dict) -> Path:
    """The errors.csv of a local store, where docs/loader-contract.md puts it."""
    return (
        store / document["namespace"] / document["catalog"] / "imports"
        / document["importId"] / "errors.csv"
    )  # fmt: skip


def error_lines(store: Path, document: dict, expected: dict[int, str]) -> str:
    """Compare the lines in the engine's error report with the invalid records' lines."""
    path = error_report_path(store, document)
    if not path.exists():
        return f"ERROR REPORT MISSING: {path}"
    with open(path, encoding="utf-8", newline="") as handle:
        reported = {int(row["line"]) for row in csv.DictReader(handle) if row.get("line")}
    missing = sorted(set(expected) - reported)
    unexpected = sorted(reported - set(expected))
    if not missing and not unexpected:
        return f"error report: all {len(expected):,} invalid records at their exact lines"
    parts = [f"ERROR REPORT DIFFERS from the {len(expected):,} invalid records:"]
    if missing:
        kinds = Counter(expected[line] for line in missing)
        parts.append(
            f"{len(missing)} not reported at their line (first: {missing[:5]}; kinds: "
            + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
            + ")"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} lines reported that hold no invalid record "
            f"(first: {unexpected[:5]})"
        )
    return " ".join(parts)
