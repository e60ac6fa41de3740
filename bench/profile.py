"""Where an engine import spends its time: every DuckDB statement, timed, with RSS.

Runs one import in this process with the engine's DuckDB connection wrapped, and prints
each statement's wall time, CPU time (all threads), the process RSS after it and the
peak so far, then the time spent outside DuckDB (Python: line scanning, error records,
start-up).

Usage: python -m bench.profile SOURCE --store DIR [--catalog bench] [--memory-limit X]
(the store is used as is: import base.csv into it first to profile a merge).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import duckdb


def _rss_mb() -> tuple[float, float]:
    """Current and peak RSS of this process (VmRSS, VmHWM), in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, amount, _ = line.split()
            values[key] = int(amount) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


class _TimedConnection:
    """Forwards everything to a DuckDB connection, timing each execute()."""

    def __init__(self, con: duckdb.DuckDBPyConnection, log: list[tuple]) -> None:
        self._con = con
        self._log = log

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            rss, peak = _rss_mb()
            self._log.append(
                (time.perf_counter() - started, time.process_time() - cpu, rss, peak, sql)
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--store", required=True)
    parser.add_argument("--catalog", default="bench")
    parser.add_argument("--memory-limit")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--sql-out", help="also write every statement in full to this file")
    args = parser.parse_args()

    process_started = time.perf_counter()
    from productimport.engine import runner
    from productimport.engine.options import ErrorPolicy, ImportOptions

    log: list[tuple] = []
    real_connect = duckdb.connect

    def connect(*a: Any, **kw: Any) -> _TimedConnection:
        return _TimedConnection(real_connect(*a, **kw), log)

    runner.duckdb.connect = connect  # type: ignore[assignment]  # this process only
    options = ImportOptions(
        source=args.source,
        catalog=args.catalog,
        store=args.store,
        memory_limit=args.memory_limit,
        threads=args.threads,
        error_policy=ErrorPolicy(maxErrors=None),
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    result, code = runner.run_import(options)
    total, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    in_duckdb = sum(entry[0] for entry in log)
    cpu_in_duckdb = sum(entry[1] for entry in log)
    print(f"import: exit {code}, {result.message}", file=sys.stderr)
    print(f"{'seconds':>8} {'cpu s':>8} {'rss MB':>8} {'peak MB':>8}  statement")
    for seconds, cpu, rss, peak, sql in log:
        text = re.sub(r"\s+", " ", sql).strip()
        print(f"{seconds:8.3f} {cpu:8.3f} {rss:8.0f} {peak:8.0f}  {text[:150]}")
    if args.sql_out:
        Path(args.sql_out).write_text(
            "".join(f"-- {seconds:.3f} s\n{sql.strip()};\n\n" for seconds, *_, sql in log)
        )
    print(
        f"\nimport {total:.2f} s: {in_duckdb:.2f} s in {len(log)} DuckDB statements, "
        f"{total - in_duckdb:.2f} s elsewhere; CPU {cpu_total:.2f} s, {cpu_in_duckdb:.2f} s in "
        f"DuckDB statements; imports before it "
        f"{started - process_started:.2f} s; peak RSS {_rss_mb()[1]:.0f} MiB"
    )


if __name__ == "__main__":
    main()
