"""DuckDB connections that can reach only the files they were opened for.

The loader's SQL is built from the file's own header names and the import's options, and
the API's reads from stored snapshots: should any of that ever smuggle SQL through, it
must not reach another file, the network, or an extension. So every connection of the
engine and the API is opened here: file access only below the given directories and to
the given files, external access then switched off (DuckDB refuses to switch it on again,
or to widen the lists, while the database runs), and no extension is installed or loaded
on demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from productimport.engine.parse import sql_string


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(map(sql_string, values)) + "]"


def _spellings(path: Path) -> tuple[Path, Path]:
    return Path(path).absolute(), Path(path).resolve()


def connect(
    directories: Iterable[Path] = (),
    files: Iterable[Path] = (),
    config: Mapping[str, Any] | None = None,
    lock: bool = True,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that may read and write below `directories` and read `files`.

    lock: no setting can change afterwards (memory, threads, temp directory: whatever
    `config` set stays). The loader passes False, because it tunes the optimizer around
    single statements; what matters for isolation (external access, the allowed files)
    is frozen by DuckDB itself once external access is off."""
    con = duckdb.connect(
        config={
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            **(config or {}),
        }
    )
    # Both spellings of each: as given (made absolute) and with links resolved.
    dirs = sorted({str(p).rstrip("/") + "/" for d in directories for p in _spellings(d)})
    paths = sorted({str(p) for f in files for p in _spellings(f)})
    if dirs:
        con.execute(f"SET allowed_directories = {_sql_list(dirs)}")
    if paths:
        con.execute(f"SET allowed_paths = {_sql_list(paths)}")
    con.execute("SET enable_external_access = false")
    if lock:
        con.execute("SET lock_configuration = true")
    return con
