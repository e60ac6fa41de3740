"""The floor: DuckDB's bare ``read_csv -> Parquet`` of a file, in its own process.

This is the least work any DuckDB-based importer has to do with the file: parse it with
an explicit schema (all VARCHAR, no sniffing) and write it to zstd Parquet. It validates
nothing beyond the CSV structure.

Malformed records need an error option or the read aborts. ``store_rejects=true`` is
used, not ``ignore_errors=true``: with DuckDB 2.0, a parallel ``ignore_errors`` read of
a file holding a record with broken quoting silently dropped everything after it
(7,601 of 100,000 rows came back, no error raised); ``store_rejects`` returns every
well-formed record and is what an importer that reports malformed lines needs anyway.

Usage: python -m bench.floor SOURCE.csv TARGET.parquet [--memory-limit 512MB]
Prints one JSON object: rows written and the seconds the conversion itself took.
"""

from __future__ import annotations

import argparse
import json
import time

import duckdb

from bench.generate import COLUMNS


def read_csv_sql(source: str) -> str:
    columns = ", ".join(f"'{name}': 'VARCHAR'" for name in COLUMNS)
    path = source.replace("'", "''")
    return (
        f"read_csv('{path}', columns={{{columns}}}, header=true, auto_detect=false, "
        "delim=',', quote='\"', escape='\"', new_line='\\n', store_rejects=true)"
    )


def convert(source: str, target: str, memory_limit: str | None = None) -> dict:
    started = time.perf_counter()
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    out = target.replace("'", "''")
    rows = con.execute(
        f"COPY (SELECT * FROM {read_csv_sql(source)}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()
    (rejected_lines,) = con.execute("SELECT count(DISTINCT line) FROM reject_errors").fetchone()
    return {
        "rows": rows[0] if rows else None,
        "rejected_lines": rejected_lines,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--memory-limit")
    args = parser.parse_args()
    print(json.dumps(convert(args.source, args.target, args.memory_limit)))


if __name__ == "__main__":
    main()
