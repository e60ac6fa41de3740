"""DuckDB in the engine and the API reaches only the files it was opened for (issue 12,
finding 10): no other file, no extension, and no way to widen that once opened."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from productimport.engine import sandbox


def test_a_sandboxed_connection_reads_and_writes_only_where_it_was_opened(tmp_path: Path):
    inside, outside = tmp_path / "work", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (inside / "a.csv").write_text("x\n1\n")
    (outside / "secret.csv").write_text("x\n42\n")
    single = tmp_path / "single.csv"
    single.write_text("x\n7\n")
    con = sandbox.connect(directories=[inside], files=[single])
    assert con.sql(f"SELECT x FROM read_csv('{inside / 'a.csv'}')").fetchall() == [(1,)]
    assert con.sql(f"SELECT x FROM read_csv('{single}')").fetchall() == [(7,)]
    con.execute(f"COPY (SELECT 1) TO '{inside / 'out.parquet'}'")
    for attack in [
        f"SELECT * FROM read_csv('{outside / 'secret.csv'}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"COPY (SELECT 1) TO '{outside / 'planted.parquet'}'",
        "SET enable_external_access = true",
        f"SET allowed_directories = ['{outside}/']",
        "LOAD httpfs",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(attack)
    assert not (outside / "planted.parquet").exists()


def test_an_import_of_a_hostile_file_writes_nothing_outside_its_work_directory(
    engine, tmp_path: Path
):
    """Header names and values reach the engine's SQL as quoted identifiers and data;
    were a quote ever missed, the sandbox would still keep the file system closed."""
    target = tmp_path / "pwned.parquet"
    hostile = f"x\"'); COPY (SELECT 1) TO '{target}'; --"
    cell = '"' + hostile.replace('"', '""') + '"'
    content = f"sku,name,{cell}\nA-1,One,{cell}\n"
    result = engine.run(engine.write("p.csv", content))
    assert result.phase == "Succeeded", result.message
    assert not target.exists()
    assert engine.products()["A-1"]["attributes"][hostile] == hostile


def test_a_locked_connection_keeps_the_limits_it_was_opened_with(tmp_path: Path):
    """The API's connections are locked: SQL that got through could not raise its memory
    or threads, or move its spill files elsewhere."""
    con = sandbox.connect(directories=[tmp_path], config={"memory_limit": "256MB"})
    limit = "SELECT current_setting('memory_limit')"
    before = con.execute(limit).fetchone()
    for attack in [
        "SET memory_limit = '64GB'",
        "SET threads = 64",
        f"SET temp_directory = '{tmp_path.parent}'",
        "SET lock_configuration = false",
    ]:
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(attack)
    assert con.execute(limit).fetchone() == before
    loader = sandbox.connect(directories=[tmp_path], lock=False)
    loader.execute("SET threads = 1")  # the loader tunes itself per statement
