"""Reading a source file into DuckDB: table `raw(rn, c0 .. cN)`, every value VARCHAR.

Columns are named by position (c0, c1, ...) so that any header text, including
duplicates, odd case and stray whitespace, is safe in SQL; `headers` keeps the names as
written. Malformed CSV records (wrong column count, broken quoting) are captured by
DuckDB's `store_rejects` with their record number, never silently dropped or padded.
JSON Lines are read one line per record, so a malformed line is an error record too.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field

import duckdb

from productimport.engine.errors import ParseError
from productimport.engine.options import CsvOptions, InputFormat
from productimport.engine.source import LocalSource, open_bytes

DELIMITER_CANDIDATES = [",", ";", "\t", "|"]


@dataclass
class Malformed:
    """A record DuckDB could not parse into the header's columns."""

    record: int  # 1-based data-record number (header excluded)
    column: str | None
    message: str
    text: str


@dataclass
class RawTable:
    headers: list[str]
    rows: int
    malformed: list[Malformed] = field(default_factory=list)
    delimiter: str | None = None


def column_name(index: int) -> str:
    """The name of the file's column `index` in every relation of its records: c0, c1,
    ... (headers can be anything; these are always plain identifiers)."""
    return f"c{index}"


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_record(source: LocalSource, options: CsvOptions) -> tuple[str, str]:
    """The header line (decoded, BOM removed) and the newline style."""
    with open_bytes(source.path, source.gzip) as handle:
        head = handle.read(1 << 20)
    if not head.strip():
        raise ParseError(f"{source.name} is empty")
    newline = "\r\n" if b"\r\n" in head.split(b"\n", 1)[0] + b"\n" else "\n"
    encoding = "utf-8-sig" if options.encoding == "utf-8" else options.encoding
    text = codecs.decode(head, encoding, errors="replace")
    return text, newline


def _sniff_delimiter(first_line: str, quote: str) -> str:
    counts = {}
    for candidate in DELIMITER_CANDIDATES:
        inside, count = False, 0
        for char in first_line:
            if char == quote:
                inside = not inside
            elif char == candidate and not inside:
                count += 1
        counts[candidate] = count
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


@dataclass
class CsvScan:
    """A CSV file's dialect and header, read without DuckDB; `sql()` scans its records.

    The scan can run more than once (the narrow validation pass, then the full merge
    pass): DuckDB parses the same bytes the same way each time, so `rn` numbers the same
    record identically in both passes.
    """

    source: LocalSource
    headers: list[str]
    delimiter: str
    params: dict[str, str]
    header: bool
    text: str  # the first MiB of the file, decoded: enough to tell an empty file

    def sql(self, rejects: str) -> str:
        """`read_csv(...)` with malformed records captured in table `rejects`."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"read_csv({sql_string(str(self.source.path))}, {args}, store_rejects=true, "
            f"rejects_table={sql_string(rejects)}, rejects_scan={sql_string(rejects + '_scans')})"
        )

    def unnumbered(self, rejects: str, only: set[int]) -> str:
        """Records without numbers (`rn` is NULL), only the columns in `only` parsed
        (the others read as NULL): DuckDB scans the file in parallel, and a query that
        keeps insertion order (SELECT, WHERE) still returns the records in file order."""
        columns, scan = self._pruned(rejects, only)
        return f"SELECT NULL::BIGINT AS rn, {columns} FROM {scan}"

    def numbered(self, rejects: str, only: set[int] | None = None) -> str:
        """Records numbered in file order. row_number() OVER () is a streaming window
        that DuckDB runs in source order, on one thread, whatever
        preserve_insertion_order says; columns cannot be pruned through it, so `only`
        names the columns to parse (the others read as NULL)."""
        if only is None:
            return f"SELECT row_number() OVER () AS rn, * FROM {self.sql(rejects)}"
        columns, scan = self._pruned(rejects, only)
        return f"SELECT row_number() OVER () AS rn, {columns} FROM {scan}"

    def _pruned(self, rejects: str, only: set[int]) -> tuple[str, str]:
        """Every column (those outside `only` as NULL), and a scan parsing only `only`."""
        names = [column_name(i) for i in range(len(self.headers))]
        columns = ", ".join(
            name if i in only else f"NULL::VARCHAR AS {name}" for i, name in enumerate(names)
        )
        picked = ", ".join(names[i] for i in sorted(only)) or "NULL AS nothing"
        return columns, f"(SELECT {picked} FROM {self.sql(rejects)})"


def inspect_csv(source: LocalSource, options: CsvOptions) -> CsvScan:
    """Header, delimiter and newline style from the file's first MiB."""
    text, newline = _first_record(source, options)
    first_line = text.split("\n", 1)[0].rstrip("\r")
    delimiter = options.delimiter or _sniff_delimiter(first_line, options.quote)
    escape = options.escape or options.quote
    reader = csv.reader(
        io.StringIO(text),
        delimiter=delimiter,
        quotechar=options.quote,
        escapechar=None if escape == options.quote else escape,
    )
    try:
        header_row = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ParseError(f"{source.name}: cannot read the header line: {exc}") from exc
    if options.header:
        headers = [name.strip() for name in header_row]
        if not any(headers):
            raise ParseError(f"{source.name}: the header line is empty")
    else:
        headers = [f"column{i + 1}" for i in range(len(header_row))]
    columns = "{" + ", ".join(f"'{column_name(i)}': 'VARCHAR'" for i in range(len(headers))) + "}"
    params = {
        "columns": columns,
        "header": "true" if options.header else "false",
        # No sniffing: the schema and dialect are given, and sniffing costs a read.
        "auto_detect": "false",
        "delim": sql_string(delimiter),
        "quote": sql_string(options.quote),
        "escape": sql_string(escape),
        # DuckDB spells newline styles as escapes, not as the characters themselves.
        "new_line": "'\\r\\n'" if newline == "\r\n" else "'\\n'",
        "encoding": sql_string(options.encoding),
        "compression": sql_string("gzip" if source.gzip else "none"),
        # strict_mode is DuckDB's default; setting it explicitly made DuckDB 2.0 return
        # zero rows, silently, for a CRLF file without a final newline.
    }
    return CsvScan(
        source=source,
        headers=headers,
        delimiter=delimiter,
        params=params,
        header=options.header,
        text=text,
    )


def define_raw(
    con: duckdb.DuckDBPyConnection,
    scan: CsvScan,
    name: str,
    rejects: str,
    only: set[int] | None = None,
    *,
    numbered: bool = True,
) -> str:
    """View `name`(rn, c0..cN) over the file: each query that reads it parses the file
    again, streaming (only the columns in `only`, when given), its malformed records
    going to table `rejects`. `numbered=False` leaves `rn` NULL and lets DuckDB read the
    file on every thread (see CsvScan.unnumbered)."""
    if numbered:
        sql = scan.numbered(rejects, only)
    else:
        sql = scan.unnumbered(rejects, set(range(len(scan.headers))) if only is None else only)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
    return name


def materialise_raw(con: duckdb.DuckDBPyConnection, scan: CsvScan, name: str, rejects: str) -> str:
    """Table `name`(rn, c0..cN): for presets that read the records more than once per
    query (a view would parse the file, and capture its malformed records, once per
    read)."""
    try:
        con.execute(f"CREATE TEMP TABLE {name} AS {scan.numbered(rejects)}")
    except duckdb.Error as exc:
        raise csv_error(scan, exc) from exc
    return name


def csv_error(scan: CsvScan, exc: Exception) -> ParseError:
    return ParseError(f"{scan.source.name} could not be parsed as CSV: {first_line(exc)}")


def malformed_csv_records(
    con: duckdb.DuckDBPyConnection, scan: CsvScan, rejects: str
) -> list[Malformed]:
    """The records DuckDB rejected while scanning, from table `rejects`."""
    header_offset = 1 if scan.header else 0
    # DuckDB names our positional columns (c0, c1, ...); users know the headers.
    header_names = {column_name(i): header for i, header in enumerate(scan.headers)}

    def header_of(column: str | None) -> str | None:
        return header_names.get(column, column) if column else None

    return [
        Malformed(record=line - header_offset, column=header_of(column), message=message, text=text)
        for line, column, message, text in con.execute(
            f"""
            SELECT line, any_value(column_name ORDER BY byte_position),
                   string_agg(DISTINCT error_message, '; '), any_value(csv_line)
            FROM {rejects} GROUP BY line ORDER BY line
            """
        ).fetchall()
    ]


def check_rows_read(scan: CsvScan, rows: int, malformed: list[Malformed]) -> None:
    """Never report "0 rows, success" for a file that visibly holds rows."""
    if rows == 0 and not malformed and _has_data_after_header(scan.text, scan.header):
        raise ParseError(
            f"{scan.source.name}: no rows could be read although the file holds data; "
            f"check the delimiter ({scan.delimiter!r}), quote and encoding options"
        )


def _has_data_after_header(text: str, header: bool) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) > (1 if header else 0)


def read_json(con: duckdb.DuckDBPyConnection, source: LocalSource, name: str) -> RawTable:
    """Table `name`(rn, c0..cN) from JSON (an array of objects) or JSON Lines (one
    object per line); its working tables (jdocs, the reader's rejects) are its own."""
    path = sql_string(str(source.path))
    compression = sql_string("gzip" if source.gzip else "none")
    try:
        if source.format is InputFormat.json:
            con.execute(
                f"CREATE TEMP TABLE jdocs AS SELECT row_number() OVER () AS rn, json AS doc "
                f"FROM read_json({path}, format='array', records=false, "
                f"compression={compression}, maximum_object_size=67108864)"
            )
        else:
            # One VARCHAR per line: a raw 0x1E can never occur in valid JSON text, so no
            # line is split, and quoting is off so quotes mean nothing to the reader.
            con.execute(
                f"CREATE TEMP TABLE jdocs AS SELECT row_number() OVER () AS rn, line AS doc "
                f"FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, header=false, "
                f"auto_detect=false, delim='\x1e', quote='', escape='', "
                f"compression={compression}, store_rejects=true, "
                f"rejects_table='reject_errors', rejects_scan='reject_scans')"
            )
    except duckdb.Error as exc:
        raise ParseError(f"{source.name} is not valid JSON: {first_line(exc)}") from exc
    malformed = [
        Malformed(record=rn, column=None, message=message, text=doc or "")
        for rn, doc, message in con.execute(
            """
            SELECT rn, doc, CASE WHEN NOT json_valid(doc) THEN 'not valid JSON'
                                 ELSE 'expected a JSON object, found ' || json_type(doc::JSON) END
            FROM jdocs
            WHERE NOT json_valid(doc) OR json_type(doc::JSON) <> 'OBJECT'
            ORDER BY rn
            """
        ).fetchall()
    ]
    keys = [
        key
        for (key,) in con.execute(
            """
            SELECT key FROM (
                SELECT unnest(json_keys(doc::JSON)) AS key, rn FROM jdocs
                WHERE json_valid(doc) AND json_type(doc::JSON) = 'OBJECT'
            ) GROUP BY key ORDER BY min(rn), key
            """
        ).fetchall()
    ]
    if not keys and not malformed:
        raise ParseError(f"{source.name} holds no JSON objects")
    selects = ", ".join(
        f"json_extract_string(doc::JSON, {sql_string(_json_path(key))}) AS {column_name(i)}"
        for i, key in enumerate(keys)
    )
    # Valid rows are renumbered densely, exactly as DuckDB numbers accepted CSV rows, so
    # the same record mapping serves both formats.
    con.execute(
        f"CREATE TEMP TABLE {name} AS SELECT row_number() OVER (ORDER BY rn) AS rn"
        f"{', ' + selects if selects else ''} FROM jdocs "
        f"WHERE json_valid(doc) AND json_type(doc::JSON) = 'OBJECT'"
    )
    rows = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # type: ignore[index]
    return RawTable(headers=keys, rows=rows, malformed=malformed)


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def first_line(exc: Exception) -> str:
    return str(exc).strip().split("\n", 1)[0]
